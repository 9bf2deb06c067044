//! RFC 5321 paths in MAIL and RCPT, their ESMTP parameters, and the relay tricks an
//! address can hide.
//!
//! [`parse_path`] reads `<local@domain> PARAM=value ...` (or `<>` for the sender):
//! a source route (`<@a,@b:user@c>`) is accepted and dropped as RFC 5321 §C says, a
//! quoted local part is unquoted, the domain is a name (UTF-8 allowed, the caller
//! checks SMTPUTF8) or an address literal (`[192.0.2.1]`, `[IPv6:...]`).
//!
//! [`resolve`] then looks through the forms old mailers used for relaying, so that
//! the relay decision is made on the *real* destination: `user%host@local`
//! (%-hack), `host!user@local` and `host!user` (bang paths), `"user@host"@local`
//! (a quoted `@`). Each is rewritten to `user@host`; the policy refuses it unless the
//! client may relay, and a trusted client's message is routed to where it really goes.
//! Errors are values that the session maps to 501/553 replies.

/// A parsed mailbox: local part (unquoted) and domain (lower case for names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub local: String,
    pub domain: String,
}

impl Mailbox {
    /// `local@domain`, re-quoting a local part that needs it.
    pub fn address(&self) -> String {
        if needs_quotes(&self.local) {
            let q = self.local.replace('\\', "\\\\").replace('"', "\\\"");
            format!("\"{q}\"@{}", self.domain)
        } else {
            format!("{}@{}", self.local, self.domain)
        }
    }

    /// True when any part is not ASCII (needs SMTPUTF8).
    pub fn is_utf8(&self) -> bool {
        !self.local.is_ascii() || !self.domain.is_ascii()
    }
}

/// A MAIL or RCPT argument: the path and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathArg {
    /// `None` for the null path `<>`.
    pub mailbox: Option<Mailbox>,
    /// `(KEYWORD upper case, value)`.
    pub params: Vec<(String, Option<String>)>,
    /// True when the client wrote a source route (dropped).
    pub had_route: bool,
}

/// Why a path was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrError {
    /// Not `<...>` or bad parameter syntax (501 5.5.4).
    Syntax(&'static str),
    /// A path whose address is malformed (553 5.1.3 / 501 5.1.7).
    BadAddress(&'static str),
    /// Longer than allowed (501 5.1.3... we answer 553 5.1.3 too).
    TooLong,
}

/// Longest path accepted (RFC 5321 §4.5.3.1.3 says 256; UTF-8 needs a little more).
pub const MAX_PATH: usize = 512;

/// Parses `<path> [params]`. `postmaster` without domain is kept as a bare local part
/// with an empty domain; the caller decides what it means.
pub fn parse_path(arg: &str) -> Result<PathArg, AddrError> {
    let arg = arg.trim();
    let rest = arg
        .strip_prefix('<')
        .ok_or(AddrError::Syntax("path must be in <>"))?;
    let close = find_close(rest).ok_or(AddrError::Syntax("unterminated path"))?;
    let inner = &rest[..close];
    let params = parse_params(&rest[close + 1..])?;
    if inner.len() > MAX_PATH {
        return Err(AddrError::TooLong);
    }
    if inner.is_empty() {
        return Ok(PathArg {
            mailbox: None,
            params,
            had_route: false,
        });
    }
    let (had_route, mbox) = strip_route(inner)?;
    Ok(PathArg {
        mailbox: Some(parse_mailbox(mbox)?),
        params,
        had_route,
    })
}

/// What the relay check must look at after seeing through the tricks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub mailbox: Mailbox,
    /// Name of the trick seen, for the log (`percent`, `bang`, `quoted-at`).
    pub trick: Option<&'static str>,
}

/// Sees through %-hack, bang paths and quoted `@` as long as the domain is local
/// (`is_local`); a remote domain is final, since it is the next hop either way.
pub fn resolve(mut m: Mailbox, is_local: impl Fn(&str) -> bool) -> Resolved {
    let mut trick = None;
    for _ in 0..8 {
        if !(m.domain.is_empty() || is_local(&m.domain)) {
            break;
        }
        let next = if let Some((user, host)) = m.local.rsplit_once('@') {
            Some(("quoted-at", user, host))
        } else if let Some((user, host)) = m.local.rsplit_once('%') {
            Some(("percent", user, host))
        } else if let Some((host, user)) = m.local.split_once('!') {
            Some(("bang", user, host))
        } else {
            None
        };
        let Some((name, user, host)) = next else {
            break;
        };
        if user.is_empty() || host.is_empty() {
            break;
        }
        trick = Some(name);
        m = Mailbox {
            local: user.to_string(),
            domain: host.to_ascii_lowercase(),
        };
    }
    Resolved { mailbox: m, trick }
}

/// Index of the `>` closing the path, skipping quoted strings.
fn find_close(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// `@a,@b:user@c` -> (true, `user@c`).
fn strip_route(inner: &str) -> Result<(bool, &str), AddrError> {
    if !inner.starts_with('@') {
        return Ok((false, inner));
    }
    let colon = inner
        .find(':')
        .ok_or(AddrError::BadAddress("bad source route"))?;
    let route = &inner[..colon];
    let ok = route
        .split(',')
        .all(|hop| hop.strip_prefix('@').is_some_and(valid_domain));
    if !ok {
        return Err(AddrError::BadAddress("bad source route"));
    }
    Ok((true, &inner[colon + 1..]))
}

/// `local@domain`, or a bare `postmaster` (any case) with an empty domain.
fn parse_mailbox(s: &str) -> Result<Mailbox, AddrError> {
    let (local, domain) = if let Some(q) = s.strip_prefix('"') {
        let end = quoted_end(q).ok_or(AddrError::BadAddress("unterminated quoted string"))?;
        let local = unquote(&q[..end])?;
        match q[end + 1..].strip_prefix('@') {
            Some(d) => (local, d),
            None if q[end + 1..].is_empty() => (local, ""),
            None => return Err(AddrError::BadAddress("text after quoted string")),
        }
    } else {
        let (l, d) = s.rsplit_once('@').unwrap_or((s, ""));
        if !valid_dot_string(l) {
            return Err(AddrError::BadAddress("bad local part"));
        }
        (l.to_string(), d)
    };
    if domain.is_empty() {
        // Only a bare local part reaches here; RFC 5321 §4.5.1 requires <postmaster>,
        // and bang paths (host!user) are resolved later.
        if local.eq_ignore_ascii_case("postmaster") || local.contains('!') {
            return Ok(Mailbox {
                local,
                domain: String::new(),
            });
        }
        return Err(AddrError::BadAddress("address needs a domain"));
    }
    if !(valid_domain(domain) || valid_literal(domain)) {
        return Err(AddrError::BadAddress("bad domain"));
    }
    Ok(Mailbox {
        local,
        domain: domain.to_lowercase(),
    })
}

fn quoted_end(q: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in q.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            _ => {}
        }
    }
    None
}

fn unquote(q: &str) -> Result<String, AddrError> {
    let mut out = String::with_capacity(q.len());
    let mut escaped = false;
    for c in q.chars() {
        if c.is_control() {
            return Err(AddrError::BadAddress("control character in quoted string"));
        }
        if escaped || c != '\\' {
            out.push(c);
            escaped = false;
        } else {
            escaped = true;
        }
    }
    Ok(out)
}

/// atext (RFC 5322) plus UTF-8, dot-separated, no empty atoms.
fn valid_dot_string(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|atom| {
            !atom.is_empty()
                && atom.chars().all(|c| {
                    !c.is_ascii() || c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
                })
        })
}

fn needs_quotes(local: &str) -> bool {
    !valid_dot_string(local)
}

/// A domain name: labels of letters, digits, `-` (UTF-8 labels allowed), ≤255 octets.
pub fn valid_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 255
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| !c.is_ascii() || c.is_ascii_alphanumeric() || c == '-')
                && !l.chars().any(char::is_control)
        })
}

/// `[192.0.2.1]` or `[IPv6:2001:db8::1]`.
fn valid_literal(d: &str) -> bool {
    let Some(inner) = d.strip_prefix('[').and_then(|r| r.strip_suffix(']')) else {
        return false;
    };
    match inner.get(..5) {
        Some(p) if p.eq_ignore_ascii_case("IPv6:") => {
            inner[5..].parse::<std::net::Ipv6Addr>().is_ok()
        }
        _ => inner.parse::<std::net::Ipv4Addr>().is_ok(),
    }
}

/// ` SIZE=10 BODY=8BITMIME` -> [("SIZE", Some("10")), ("BODY", Some("8BITMIME"))].
fn parse_params(s: &str) -> Result<Vec<(String, Option<String>)>, AddrError> {
    let mut out = Vec::new();
    if !s.is_empty() && !s.starts_with(' ') {
        return Err(AddrError::Syntax("text after path"));
    }
    for word in s.split_ascii_whitespace() {
        let (k, v) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (word, None),
        };
        let key_ok = !k.is_empty()
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && v.as_deref().is_none_or(|v| !v.is_empty());
        if !key_ok {
            return Err(AddrError::Syntax("bad parameter"));
        }
        out.push((k.to_ascii_uppercase(), v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn mb(local: &str, domain: &str) -> Mailbox {
        Mailbox {
            local: local.into(),
            domain: domain.into(),
        }
    }

    #[test]
    fn plain_null_and_params() {
        let p = parse_path("<User@Example.COM> SIZE=100 BODY=8BITMIME").unwrap();
        assert_eq!(p.mailbox, Some(mb("User", "example.com")));
        assert_eq!(p.params[0], ("SIZE".into(), Some("100".into())));
        assert_eq!(parse_path("<>").unwrap().mailbox, None);
        assert_eq!(parse_path("<> SMTPUTF8").unwrap().params[0].0, "SMTPUTF8");
    }

    #[test]
    fn syntax_errors() {
        for bad in [
            "a@b", "<a@b", "<a@b>x", "<@a:>", "<a@-b>", "<a..b@c>", "<a@b> K=", "<\"x>",
        ] {
            assert!(parse_path(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_path(&format!("<{}@b.c>", "a".repeat(600))),
            Err(AddrError::TooLong)
        );
    }

    #[test]
    fn source_route_dropped() {
        let p = parse_path("<@a.example,@b.example:user@c.example>").unwrap();
        assert!(p.had_route);
        assert_eq!(p.mailbox, Some(mb("user", "c.example")));
    }

    #[test]
    fn quoted_and_literals() {
        let p = parse_path("<\"john doe\"@[192.0.2.1]>").unwrap();
        assert_eq!(p.mailbox, Some(mb("john doe", "[192.0.2.1]")));
        assert_eq!(p.mailbox.unwrap().address(), "\"john doe\"@[192.0.2.1]");
        assert!(parse_path("<a@[IPv6:2001:db8::1]>").is_ok());
        assert!(parse_path("<a@[300.1.1.1]>").is_err());
        let p = parse_path("<\"a>b\"@x.example>").unwrap();
        assert_eq!(p.mailbox.unwrap().local, "a>b");
        assert!(parse_path("<Postmaster>").is_ok());
        assert!(parse_path("<用户@例子.测试>")
            .unwrap()
            .mailbox
            .unwrap()
            .is_utf8());
    }

    #[test]
    fn tricks_resolved_only_through_local_domains() {
        let local = |d: &str| d == "local.test";
        let r = resolve(mb("user%remote.example", "local.test"), local);
        assert_eq!(r.mailbox, mb("user", "remote.example"));
        assert_eq!(r.trick, Some("percent"));
        let r = resolve(mb("remote.example!user", "local.test"), local);
        assert_eq!(r.mailbox, mb("user", "remote.example"));
        let r = resolve(mb("remote.example!user", ""), local);
        assert_eq!(r.mailbox, mb("user", "remote.example"));
        let r = resolve(mb("user@remote.example", "local.test"), local);
        assert_eq!(
            (r.mailbox, r.trick),
            (mb("user", "remote.example"), Some("quoted-at"))
        );
        let r = resolve(mb("a%b", "remote.example"), local);
        assert_eq!((r.mailbox, r.trick), (mb("a%b", "remote.example"), None));
        let r = resolve(mb("alice", "local.test"), local);
        assert_eq!(r.trick, None);
        // Nested: a%b%local.test@local.test -> a%b@local.test -> a@b
        let r = resolve(mb("a%b.example%local.test", "local.test"), local);
        assert_eq!(r.mailbox, mb("a", "b.example"));
    }
}
