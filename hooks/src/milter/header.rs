//! The header block of a message, split into fields without copying.
//!
//! A field is a line `name: value` (the name is printable ASCII without a colon, as
//! RFC 5322 says, optionally followed by blanks before the colon) and the continuation
//! lines that follow it (lines starting with a space or a tab). The block ends at the
//! first empty line (the separator, which belongs to neither part) or, as in Postfix,
//! at the first line that is neither a field nor a continuation (the body then starts
//! at that line, with no separator).

/// One header field: octet offsets into the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field {
    /// The first octet of the name.
    pub start: usize,
    /// Just after the name (before any blank and the colon).
    pub name_end: usize,
    /// Just after the colon.
    pub value_start: usize,
    /// Just after the field's last line end (or the message end).
    pub end: usize,
}

impl Field {
    pub fn name<'m>(&self, message: &'m [u8]) -> &'m [u8] {
        &message[self.start..self.name_end]
    }

    /// The value as it stands after the colon, without the last line end.
    pub fn raw_value<'m>(&self, message: &'m [u8]) -> &'m [u8] {
        let v = &message[self.value_start..self.end];
        let v = v.strip_suffix(b"\n").unwrap_or(v);
        v.strip_suffix(b"\r").unwrap_or(v)
    }
}

/// A message split into its header fields and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Split {
    pub fields: Vec<Field>,
    /// Where the header block ends: the separator line, or the body when there is none.
    pub header_end: usize,
    /// The first octet of the body.
    pub body_start: usize,
}

/// Splits `message` (header, empty line, body).
pub(crate) fn split(message: &[u8]) -> Split {
    let mut fields: Vec<Field> = Vec::new();
    let mut pos = 0;
    while pos < message.len() {
        let line_end = memchr::memchr(b'\n', &message[pos..])
            .map(|i| pos + i + 1)
            .unwrap_or(message.len());
        let line = &message[pos..line_end];
        if line == b"\r\n" || line == b"\n" {
            return Split {
                fields,
                header_end: pos,
                body_start: line_end,
            };
        }
        let continues = matches!(line.first(), Some(b' ' | b'\t'));
        match (continues, fields.last_mut()) {
            (true, Some(last)) => last.end = line_end,
            _ => match field_name(line) {
                Some((name_len, colon)) => fields.push(Field {
                    start: pos,
                    name_end: pos + name_len,
                    value_start: pos + colon + 1,
                    end: line_end,
                }),
                None => {
                    return Split {
                        fields,
                        header_end: pos,
                        body_start: pos,
                    }
                }
            },
        }
        pos = line_end;
    }
    Split {
        fields,
        header_end: message.len(),
        body_start: message.len(),
    }
}

/// For a field's first line: the name's length and the colon's offset.
fn field_name(line: &[u8]) -> Option<(usize, usize)> {
    let name_len = line
        .iter()
        .position(|&b| !(33..=126).contains(&b) || b == b':')?;
    if name_len == 0 {
        return None;
    }
    let blanks = line[name_len..]
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    (line.get(name_len + blanks) == Some(&b':')).then_some((name_len, name_len + blanks))
}

/// The value as a filter sees it: folded lines joined with a bare LF, and (unless the
/// filter asked for the leading space) one space after the colon removed.
pub(crate) fn value_for_filter(raw: &[u8], leading_space: bool) -> Vec<u8> {
    let raw = match raw.first() {
        Some(b' ') if !leading_space => &raw[1..],
        _ => raw,
    };
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\r' && raw.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(raw[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_continuations_and_body() {
        let m =
            b"Received: from a\r\n\tby b\r\nSubject : hi\r\nFrom: <a@example.test>\r\n\r\nbody\r\n";
        let s = split(m);
        assert_eq!(s.fields.len(), 3);
        assert_eq!(s.fields[0].name(m), b"Received");
        assert_eq!(s.fields[0].raw_value(m), b" from a\r\n\tby b");
        assert_eq!(s.fields[1].name(m), b"Subject");
        assert_eq!(s.fields[1].raw_value(m), b" hi");
        assert_eq!(&m[s.header_end..s.body_start], b"\r\n");
        assert_eq!(&m[s.body_start..], b"body\r\n");
    }

    #[test]
    fn non_header_line_starts_the_body() {
        let m = b"Subject: x\r\nthis is not a header\r\nmore\r\n";
        let s = split(m);
        assert_eq!(s.fields.len(), 1);
        assert_eq!(s.header_end, s.body_start);
        assert_eq!(&m[s.body_start..], b"this is not a header\r\nmore\r\n");
        let s = split(b"");
        assert!(s.fields.is_empty() && s.body_start == 0);
        let s = split(b"Subject: no end");
        assert_eq!(s.fields.len(), 1);
        assert_eq!(s.fields[0].raw_value(b"Subject: no end"), b" no end");
        assert_eq!(s.body_start, 15);
        // A continuation line with nothing to continue is body.
        let s = split(b" x: y\r\n");
        assert!(s.fields.is_empty() && s.body_start == 0);
    }

    #[test]
    fn filter_sees_values_as_postfix_sends_them() {
        assert_eq!(value_for_filter(b" a\r\n\tb", false), b"a\n\tb");
        assert_eq!(value_for_filter(b" a\r\n\tb", true), b" a\n\tb");
        assert_eq!(value_for_filter(b"\ta", false), b"\ta");
        assert_eq!(value_for_filter(b"  a", false), b" a");
        assert_eq!(value_for_filter(b"", false), b"");
    }
}
