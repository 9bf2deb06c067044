//! The header section of a message (RFC 5322 §2.2), read without copying: the fields
//! before the first empty line, each with its folded continuation lines.

/// One header field: its name and its raw value (after the colon, continuation lines
/// and line ends included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
}

impl Field<'_> {
    /// True when the field's name is `name` (ASCII case-insensitive).
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }

    /// The value unfolded (line ends removed), trimmed, with control characters dropped.
    pub fn text(&self) -> String {
        let unfolded: Vec<u8> = self
            .value
            .iter()
            .copied()
            .filter(|b| *b != b'\r' && *b != b'\n')
            .collect();
        String::from_utf8_lossy(&unfolded)
            .chars()
            .filter(|c| !c.is_control() || *c == '\t')
            .collect::<String>()
            .trim()
            .to_string()
    }
}

/// The fields of `msg`'s header section, in order. A line without a colon that is
/// not a continuation ends the section, as an empty line does.
pub fn fields(msg: &[u8]) -> Fields<'_> {
    Fields { rest: msg }
}

/// Iterator over the header fields; see [`fields`].
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Fields<'a> {
    type Item = Field<'a>;

    fn next(&mut self) -> Option<Field<'a>> {
        let first_end = line_end(self.rest);
        let first = &self.rest[..first_end];
        let trimmed = first
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .unwrap_or(first);
        let colon = trimmed.iter().position(|b| *b == b':')?;
        if trimmed.is_empty() || trimmed[0] == b' ' || trimmed[0] == b'\t' {
            return None;
        }
        let mut end = first_end;
        while let Some(&b) = self.rest.get(end) {
            if b != b' ' && b != b'\t' {
                break;
            }
            end += line_end(&self.rest[end..]);
        }
        let field = Field {
            name: &first[..colon],
            value: &self.rest[colon + 1..end],
        };
        self.rest = &self.rest[end..];
        Some(field)
    }
}

/// The length of the first line of `s`, its LF included (all of `s` without one).
fn line_end(s: &[u8]) -> usize {
    memchr_lf(s).map_or(s.len(), |i| i + 1)
}

fn memchr_lf(s: &[u8]) -> Option<usize> {
    s.iter().position(|b| *b == b'\n')
}

/// The first `Message-ID` field's value (unfolded, trimmed, at most 998 octets), for
/// the `message-id=` log line operators trace a message by.
pub fn message_id(msg: &[u8]) -> Option<String> {
    let f = fields(msg).find(|f| f.is("message-id"))?;
    let mut text = f.text();
    if text.len() > 998 {
        let mut cut = 998;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn fields_stop_at_the_empty_line_and_keep_continuations() {
        let msg = b"Received: from a\r\n\tby b\r\nSubject: hi\r\n\r\nX-Not: body\r\n";
        let f: Vec<_> = fields(msg).collect();
        assert_eq!(f.len(), 2);
        assert!(f[0].is("RECEIVED"));
        assert_eq!(f[0].value, b" from a\r\n\tby b\r\n");
        assert_eq!(f[0].text(), "from a\tby b");
        assert_eq!(f[1].text(), "hi");
    }

    #[test]
    fn a_line_without_a_colon_ends_the_header() {
        let f: Vec<_> = fields(b"A: 1\nnot a header\nB: 2\n").collect();
        assert_eq!(f.len(), 1);
        assert_eq!(fields(b"").count(), 0);
        assert_eq!(fields(b" folded: first\n").count(), 0);
        assert_eq!(fields(b"A: no newline").count(), 1);
    }

    #[test]
    fn message_id_is_found_cleaned_and_clamped() {
        let msg = b"From: a@b\r\nMessage-Id:\r\n <x.1@host>\r\n\r\nbody";
        assert_eq!(message_id(msg).as_deref(), Some("<x.1@host>"));
        assert_eq!(message_id(b"From: a\r\n\r\nMessage-ID: <no>\r\n"), None);
        let long = format!("Message-ID: <{}>\r\n\r\n", "é".repeat(600));
        let id = message_id(long.as_bytes()).unwrap();
        assert!(id.len() <= 998 && id.starts_with('<'));
        assert_eq!(
            message_id(b"Message-ID: <a\x00b\x1b@c>\r\n\r\n").as_deref(),
            Some("<ab@c>")
        );
    }
}
