//! Trace headers a local delivery adds, and the `Delivered-To:` loop check.
//!
//! Local delivery prepends `Return-Path: <sender>` and `Delivered-To: <recipient>`
//! (Postfix local(8)). A message that already carries `Delivered-To:` with the address
//! being delivered to has been here before: delivering it again would loop (a
//! forward that points back at us), so it bounces with 5.4.6.
//!
//! Header parsing here is deliberately narrow: unfolded field name, case-insensitive
//! match, value compared without surrounding spaces and angle brackets.

/// The two trace header lines, with the message's own line ending.
pub fn trace_headers(sender: &str, recipient: &str, crlf: bool) -> Vec<u8> {
    let eol = if crlf { "\r\n" } else { "\n" };
    format!(
        "Return-Path: <{}>{eol}Delivered-To: {}{eol}",
        printable(sender),
        printable(recipient)
    )
    .into_bytes()
}

/// The `Delivered-To:` header line alone (added to forwarded copies).
pub fn delivered_to(recipient: &str, crlf: bool) -> Vec<u8> {
    let eol = if crlf { "\r\n" } else { "\n" };
    format!("Delivered-To: {}{eol}", printable(recipient)).into_bytes()
}

/// True when `header` (the header section) has a `Delivered-To:` equal to `recipient`.
pub fn has_delivered_to(header: &[u8], recipient: &str) -> bool {
    unfolded_fields(header)
        .iter()
        .filter_map(|f| field_value(f, "delivered-to"))
        .any(|v| {
            v.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .eq_ignore_ascii_case(recipient)
        })
}

/// Header fields with continuation lines joined (CR and LF removed).
fn unfolded_fields(header: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(header);
    let mut fields: Vec<String> = Vec::new();
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        if line.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut() {
                last.push_str(line);
            }
        } else if !line.is_empty() {
            fields.push(line.to_string());
        }
    }
    fields
}

/// The value of `field` when it is named `name` (lower case).
fn field_value<'a>(field: &'a str, name: &str) -> Option<&'a str> {
    let (n, v) = field.split_once(':')?;
    n.trim_end().eq_ignore_ascii_case(name).then_some(v)
}

/// An address made safe for a header line: no CR, LF or NUL.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_headers_follow_the_line_ending() {
        assert_eq!(
            trace_headers("a@b", "c@d", true),
            b"Return-Path: <a@b>\r\nDelivered-To: c@d\r\n".to_vec()
        );
        assert_eq!(
            trace_headers("", "c@d", false),
            b"Return-Path: <>\nDelivered-To: c@d\n".to_vec()
        );
        assert_eq!(
            trace_headers("x\r\ny", "c@d", false),
            b"Return-Path: <x??y>\nDelivered-To: c@d\n".to_vec()
        );
    }

    #[test]
    fn delivered_to_loops_are_found() {
        let h = b"Subject: x\r\nDELIVERED-TO:  <Bob@Example.test>\r\n";
        assert!(has_delivered_to(h, "bob@example.test"));
        assert!(!has_delivered_to(h, "alice@example.test"));
        let folded = b"Delivered-To:\r\n bob@example.test\r\n";
        assert!(has_delivered_to(folded, "bob@example.test"));
        assert!(!has_delivered_to(b"X-Delivered-To: bob@e\r\n", "bob@e"));
    }
}
