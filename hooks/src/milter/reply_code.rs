//! `SMFIR_REPLYCODE`: the filter's own SMTP reply, checked as Postfix checks it.

use super::{MilterError, MilterReply};

/// Checks an `SMFIR_REPLYCODE` reply as Postfix does: each line `4xx` or `5xx`, the
/// same code on every line, then a blank or `-`, and an enhanced status code (when
/// there is one) of the same class. `%%` is a literal `%`; a lone `%` is dropped.
pub(crate) fn parse_reply_code(raw: &str) -> Result<MilterReply, MilterError> {
    let bad = || MilterError::Protocol(format!("malformed reply {raw:?}"));
    let unescaped = unescape_percent(raw);
    let mut code = None;
    let mut enhanced = None;
    let mut texts = Vec::new();
    for line in unescaped.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() && code.is_some() {
            continue;
        }
        let digits = line.get(..3).ok_or_else(bad)?;
        let n: u16 = digits
            .parse()
            .ok()
            .filter(|_| digits.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(bad)?;
        if !(400..600).contains(&n) {
            return Err(MilterError::Protocol(format!(
                "reply code {n} is not 4xx or 5xx: {raw:?}"
            )));
        }
        if code.is_some_and(|c| c != n) {
            return Err(bad());
        }
        code = Some(n);
        let rest = match line.as_bytes().get(3) {
            None => "",
            Some(b' ' | b'-') => &line[4..],
            Some(_) => return Err(bad()),
        };
        let (status, text) = match rest.split_once(' ') {
            Some((first, text)) => (first, text),
            None => (rest, ""),
        };
        match parse_enhanced(status) {
            Some(e) if u16::from(e.0) * 100 != n / 100 * 100 => return Err(bad()),
            Some(e) => {
                enhanced.get_or_insert(e);
                texts.push(text.to_string());
            }
            None => texts.push(rest.to_string()),
        }
    }
    let code = code.ok_or_else(bad)?;
    Ok(MilterReply::Code {
        code,
        enhanced,
        text: texts
            .into_iter()
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
    })
}

fn parse_enhanced(s: &str) -> Option<(u8, u16, u16)> {
    let mut parts = s.split('.');
    let class: u8 = parts.next()?.parse().ok()?;
    let subject: u16 = parts.next()?.parse().ok()?;
    let detail: u16 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    matches!(class, 2 | 4 | 5).then_some((class, subject, detail))
}

fn unescape_percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            if let Some(next) = chars.next() {
                if next == '%' {
                    out.push('%');
                } else {
                    out.push(next);
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(code: u16, enhanced: Option<(u8, u16, u16)>, text: &str) -> MilterReply {
        MilterReply::Code {
            code,
            enhanced,
            text: text.into(),
        }
    }

    #[test]
    fn reply_codes_as_postfix_checks_them() {
        assert_eq!(
            parse_reply_code("554 5.7.1 Gtube pattern").unwrap(),
            code(554, Some((5, 7, 1)), "Gtube pattern")
        );
        assert_eq!(
            parse_reply_code("451 Try later").unwrap(),
            code(451, None, "Try later")
        );
        assert_eq!(
            parse_reply_code("550-5.7.1 first\r\n550 5.7.1 second").unwrap(),
            code(550, Some((5, 7, 1)), "first second")
        );
        assert_eq!(
            parse_reply_code("550 5.7.1 100%% spam, 50% sure").unwrap(),
            code(550, Some((5, 7, 1)), "100% spam, 50 sure")
        );
        assert_eq!(parse_reply_code("421").unwrap(), code(421, None, ""));
        for (bad, why) in [
            ("250 2.0.0 Ok", "reply code 250 is not 4xx or 5xx"),
            ("354 go", "reply code 354 is not 4xx or 5xx"),
            ("550 4.7.1 mixed class", "malformed reply"),
            ("55x nope", "malformed reply"),
            ("550x", "malformed reply"),
            ("55", "malformed reply"),
            ("", "malformed reply"),
            ("550-a\r\n451 b", "malformed reply"),
        ] {
            let err = parse_reply_code(bad).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("protocol error: {why}")),
                "{bad}: {err}"
            );
        }
    }
}
