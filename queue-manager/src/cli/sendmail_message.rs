//! The message side of `sloop-sendmail`: reading stdin the sendmail way and completing
//! the header.
//!
//! Input ends at EOF, or at a line holding a lone `.` unless `-i`/`-oi` was given. Line
//! endings become CRLF (LF or CRLF in, CRLF out). A leading mbox `From ` line is
//! dropped. The header section is the run of `Name: value` fields (with folded
//! continuation lines) at the top; `Bcc` fields are removed; `From`, `Date` and
//! `Message-ID` are appended when missing. With `-t` the addresses in `To`, `Cc` and
//! `Bcc` are extracted (RFC 5322 address lists: display names, comments, quoted strings
//! and groups are handled; anything unparsable is taken as written).

use std::io::{self, BufRead};

/// One header field: its name and its raw lines (first line plus continuations).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    name: String,
    lines: Vec<Vec<u8>>,
}

impl Field {
    fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// The unfolded value after the colon.
    fn value(&self) -> String {
        let mut v = Vec::new();
        for (i, l) in self.lines.iter().enumerate() {
            let part = if i == 0 {
                l.splitn(2, |&b| b == b':').nth(1).unwrap_or(&[])
            } else {
                l.as_slice()
            };
            v.extend_from_slice(part);
        }
        String::from_utf8_lossy(&v).trim().to_string()
    }
}

/// A message split into header fields and body lines (no line endings stored).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    fields: Vec<Field>,
    body: Vec<Vec<u8>>,
}

/// Headers to add when the message lacks them.
#[derive(Debug, Clone)]
pub struct Missing {
    pub from: String,
    pub date: String,
    pub message_id: String,
}

impl Message {
    /// Reads stdin-style input; `ignore_dots` is `-i`.
    pub fn read(input: impl BufRead, ignore_dots: bool) -> io::Result<Message> {
        let lines = read_lines(input, ignore_dots)?;
        Ok(Message::split(lines))
    }

    fn split(mut lines: Vec<Vec<u8>>) -> Message {
        if lines
            .first()
            .map(|l| l.starts_with(b"From "))
            .unwrap_or(false)
        {
            lines.remove(0);
        }
        let mut fields: Vec<Field> = Vec::new();
        let mut rest = lines.into_iter().peekable();
        while let Some(line) = rest.peek() {
            let folded = matches!(line.first(), Some(b' ' | b'\t'));
            if folded && !fields.is_empty() {
                if let (Some(f), Some(l)) = (fields.last_mut(), rest.next()) {
                    f.lines.push(l);
                }
            } else if let Some(name) = field_name(line) {
                let name = name.to_string();
                let lines = rest.next().into_iter().collect();
                fields.push(Field { name, lines });
            } else {
                break;
            }
        }
        let mut body: Vec<Vec<u8>> = rest.collect();
        if body.first().map(|l| l.is_empty()).unwrap_or(false) {
            body.remove(0); // the separator; re-added on output
        }
        Message { fields, body }
    }

    /// True when a field called `name` exists (any case).
    pub fn has(&self, name: &str) -> bool {
        self.fields.iter().any(|f| f.is(name))
    }

    /// Addresses in the To, Cc and Bcc fields (for `-t`).
    pub fn recipients(&self) -> Vec<String> {
        self.fields
            .iter()
            .filter(|f| f.is("To") || f.is("Cc") || f.is("Bcc"))
            .flat_map(|f| parse_address_list(&f.value()))
            .collect()
    }

    /// Removes every Bcc field.
    pub fn remove_bcc(&mut self) {
        self.fields.retain(|f| !f.is("Bcc"));
    }

    /// Appends `From`, `Date` and `Message-ID` where missing.
    pub fn add_missing(&mut self, m: &Missing) {
        for (name, value) in [
            ("From", &m.from),
            ("Date", &m.date),
            ("Message-ID", &m.message_id),
        ] {
            if !self.has(name) {
                let line = format!("{name}: {value}").into_bytes();
                self.fields.push(Field {
                    name: name.to_string(),
                    lines: vec![line],
                });
            }
        }
    }

    /// The message with CRLF line endings.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for line in self.fields.iter().flat_map(|f| f.lines.iter()) {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        for line in &self.body {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
        out
    }
}

/// Lines without their LF or CRLF, up to EOF or a lone `.` (unless `ignore_dots`).
fn read_lines(mut input: impl BufRead, ignore_dots: bool) -> io::Result<Vec<Vec<u8>>> {
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(lines);
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        if !ignore_dots && line == b"." {
            return Ok(lines);
        }
        lines.push(line);
    }
}

/// The field name of a header line (`Name:`), printable ASCII without spaces.
fn field_name(line: &[u8]) -> Option<&str> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = &line[..colon];
    if name.is_empty() || !name.iter().all(|b| (33..=126).contains(b)) {
        return None;
    }
    std::str::from_utf8(name).ok()
}

/// The addresses of an RFC 5322 address list: `Name <a@b>, c@d (comment), g: e@f;`.
pub fn parse_address_list(value: &str) -> Vec<String> {
    split_top_level(value)
        .into_iter()
        .filter_map(|item| address_of(&item))
        .collect()
}

/// Splits on commas outside quotes, comments and angle brackets; group names and the
/// group terminator `;` act as separators too.
fn split_top_level(value: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut depth, mut angle, mut escaped) = (false, 0u32, false, false);
    for c in value.chars() {
        if escaped {
            escaped = false;
            cur.push(c);
            continue;
        }
        match c {
            '\\' if quoted || depth > 0 => escaped = true,
            '"' if depth == 0 => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => depth -= 1,
            '<' if !quoted && depth == 0 => angle = true,
            '>' if !quoted && depth == 0 => angle = false,
            ',' | ';' if !quoted && depth == 0 && !angle => {
                items.push(std::mem::take(&mut cur));
                continue;
            }
            ':' if !quoted && depth == 0 && !angle => {
                cur.clear(); // "group-name:" starts a group
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    items.push(cur);
    items
}

/// The address in one list item: inside `<...>` if present, else the item without
/// comments and quotes' surrounding space.
fn address_of(item: &str) -> Option<String> {
    let addr = match (item.find('<'), item.rfind('>')) {
        (Some(a), Some(b)) if a < b => item[a + 1..b].to_string(),
        _ => strip_comments(item),
    };
    let addr = addr.trim().to_string();
    (!addr.is_empty()).then_some(addr)
}

fn strip_comments(s: &str) -> String {
    let mut out = String::new();
    let (mut depth, mut quoted) = (0u32, false);
    for c in s.chars() {
        match c {
            '"' if depth == 0 => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => {
                depth -= 1;
                continue;
            }
            _ => {}
        }
        if depth == 0 {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn missing() -> Missing {
        Missing {
            from: "u@h.test".into(),
            date: "Sat, 28 Nov 2026 16:34:02 +0000".into(),
            message_id: "<ID@h.test>".into(),
        }
    }

    #[test]
    fn address_lists() {
        let v = parse_address_list(
            "\"Doe, John\" <jd@x.test>, b@y.test (Bob), Team: c@z.test, <d@z.test>;, e",
        );
        assert_eq!(
            v,
            vec!["jd@x.test", "b@y.test", "c@z.test", "d@z.test", "e"]
        );
        assert!(parse_address_list("undisclosed-recipients:;").is_empty());
    }

    #[test]
    fn lone_dot_ends_input_unless_ignore_dots() {
        let input = b"Subject: x\n\nline\n.\nafter\n".as_slice();
        let m = Message::read(input, false).unwrap();
        assert_eq!(m.body, vec![b"line".to_vec()]);
        let m = Message::read(input, true).unwrap();
        assert_eq!(m.body.len(), 3);
    }

    #[test]
    fn headers_completed_bcc_removed_crlf_out() {
        let input = b"From nobody Sat Nov 28\nTo: a@x.test,\n  b@x.test\nBcc: hidden@x.test\nSubject: hi\n\nbody\r\n";
        let mut m = Message::read(input.as_slice(), false).unwrap();
        assert_eq!(
            m.recipients(),
            vec!["a@x.test", "b@x.test", "hidden@x.test"]
        );
        m.remove_bcc();
        m.add_missing(&missing());
        let text = String::from_utf8(m.to_bytes()).unwrap();
        assert_eq!(
            text,
            "To: a@x.test,\r\n  b@x.test\r\nSubject: hi\r\nFrom: u@h.test\r\n\
             Date: Sat, 28 Nov 2026 16:34:02 +0000\r\nMessage-ID: <ID@h.test>\r\n\r\nbody\r\n"
        );
    }

    #[test]
    fn body_without_headers_gets_a_separator() {
        let mut m = Message::read(b"just text\nmore\n".as_slice(), false).unwrap();
        let mut fixed = missing();
        fixed.from = "x@y".into();
        m.add_missing(&fixed);
        let text = String::from_utf8(m.to_bytes()).unwrap();
        assert!(text.ends_with("\r\n\r\njust text\r\nmore\r\n"), "{text}");
        assert!(text.starts_with("From: x@y\r\n"));
    }

    #[test]
    fn existing_headers_are_kept() {
        let input = b"from: me@x\ndate: today\nmessage-id: <a@b>\n\nx\n";
        let mut m = Message::read(input.as_slice(), false).unwrap();
        m.add_missing(&missing());
        assert_eq!(m.fields.len(), 3);
    }
}
