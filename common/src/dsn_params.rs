//! Syntax checks of the DSN parameters of MAIL and RCPT (RFC 3461), shared by the
//! smtpd (a client's parameters) and the milter client (parameters a filter adds with
//! an edit), so both accept exactly the same values.

/// `NEVER`, or a comma list of SUCCESS, FAILURE, DELAY (RFC 3461 §4.1).
pub fn valid_notify(n: &str) -> bool {
    let words: Vec<String> = n.split(',').map(str::to_ascii_uppercase).collect();
    if words.len() == 1 && words[0] == "NEVER" {
        return true;
    }
    !words.is_empty()
        && words
            .iter()
            .all(|w| matches!(w.as_str(), "SUCCESS" | "FAILURE" | "DELAY"))
}

/// `addr-type;xtext` (RFC 3461 §4.2), e.g. `rfc822;user+40example.com`.
pub fn valid_orcpt(o: &str) -> bool {
    match o.split_once(';') {
        Some((t, x)) => {
            !t.is_empty()
                && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && valid_xtext(x, 500)
        }
        None => false,
    }
}

/// xtext (RFC 3461 §4): printable ASCII except `+` and `=`, or `+XX` hex. UTF-8
/// (utf-8-addr-xtext, RFC 6533) is tolerated but controls are not; at most `max`
/// octets.
pub fn valid_xtext(x: &str, max: usize) -> bool {
    !x.is_empty() && x.len() <= max && !x.chars().any(|c| c.is_control() || c == ' ' || c == '=')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_words() {
        assert!(valid_notify("NEVER"));
        assert!(valid_notify("success,delay"));
        assert!(!valid_notify("NEVER,SUCCESS"));
        assert!(!valid_notify(""));
        assert!(!valid_notify("SOMETIMES"));
    }

    #[test]
    fn orcpt_and_xtext() {
        assert!(valid_orcpt("rfc822;bob+40example.org"));
        assert!(!valid_orcpt("rfc822"));
        assert!(!valid_orcpt(";bob"));
        assert!(!valid_orcpt("rfc822;a=b"));
        assert!(!valid_xtext("a b", 10));
        assert!(!valid_xtext("abc", 2));
    }
}
