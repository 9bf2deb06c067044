//! Parsers for the value kinds of the parameter table: sizes with units, durations with
//! units, host names, CIDR networks, `host:port`, access rules. Each returns the typed
//! value or a message saying what was expected; none can panic.

use super::choice::{choice, Choice};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// `host:port` of a next hop. `host` may be a name or an address in brackets.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

choice! {
    /// What a client access rule of `smtpd.access` does to a matching client at
    /// connect time.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
    #[serde(rename_all = "lowercase")]
    pub enum AccessAction {
        Allow = "allow",
        Reject = "reject",
        Tempfail = "tempfail",
    }
}

/// One `"CIDR action"` rule of `smtpd.access`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRule {
    pub network: IpNet,
    pub action: AccessAction,
}

/// Why a value is refused: what was expected instead, in words an operator reads in
/// the error that names the file and key (`ConfigError`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected(pub String);

impl Expected {
    fn new(what: &str) -> Expected {
        Expected(what.to_string())
    }
}

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Expected {}

impl From<Expected> for String {
    fn from(e: Expected) -> String {
        e.0
    }
}

/// Parses `25M`, `10K`, `1G`, `512` (bytes). Units are binary (K = 1024).
/// Most octets in a name (`Kind::HookName`, `Kind::LogName`).
pub const NAME_MAX: usize = 64;

/// A name for a hook table or for log lines: 1 to [`NAME_MAX`] letters, digits, `_`,
/// `.`, `-` (nothing that could break a log tag or a path).
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= NAME_MAX
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

pub fn parse_size(s: &str) -> Result<u64, Expected> {
    let s = s.trim();
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(digits_end);
    let n: u64 = num
        .parse()
        .map_err(|_| Expected::new("a size such as 25M, 512K or 10485760"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" | "b" => 1,
        "K" | "k" | "KB" | "kB" | "KiB" => 1024,
        "M" | "MB" | "MiB" => 1024 * 1024,
        "G" | "GB" | "GiB" => 1024 * 1024 * 1024,
        _ => return Err(Expected::new("a size with unit K, M or G (such as 25M)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| Expected::new("a size that fits in 64 bits"))
}

/// Parses `30s`, `5m`, `100ms`, `4h`, `5d`, `1w`. A bare number is refused: the unit
/// is part of the meaning.
pub fn parse_duration(s: &str) -> Result<Duration, Expected> {
    let expected =
        || Expected::new("a duration with a unit: ms, s, m, h, d or w (such as 30s or 5d)");
    let s = s.trim();
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(digits_end);
    let n: u64 = num.parse().map_err(|_| expected())?;
    let ms: u64 = match unit.trim() {
        "ms" => 1,
        "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return Err(expected()),
    };
    n.checked_mul(ms)
        .map(Duration::from_millis)
        .ok_or_else(expected)
}

/// A duration key's value (a TOML string) within `min..=max` milliseconds, or what
/// was expected instead; `example` is a value to show for a non-string.
pub fn duration_within(
    value: &toml::Value,
    min: u64,
    max: u64,
    example: &str,
) -> Result<Duration, Expected> {
    let Some(s) = value.as_str() else {
        return Err(Expected(format!(
            "a duration string with a unit, such as \"{example}\""
        )));
    };
    let d = parse_duration(s)?;
    let ms = d.as_millis() as u64;
    if ms >= min && ms <= max {
        Ok(d)
    } else {
        Err(Expected(format!(
            "a duration from {} to {}",
            format_duration(Duration::from_millis(min)),
            format_duration(Duration::from_millis(max))
        )))
    }
}

/// Renders a duration the way the parser reads it back, in the largest exact unit.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    for (unit, size) in [
        ("w", 604_800_000u64),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms != 0 && ms.is_multiple_of(size) {
            return format!("{}{}", ms / size, unit);
        }
    }
    format!("{ms}ms")
}

/// A host name as RFC 1123 allows: labels of letters, digits and `-`, 1..63 octets, the
/// whole at most 253 octets.
pub fn parse_hostname(s: &str) -> Result<String, Expected> {
    let expected = "a host name of letters, digits, '-' and '.' (such as mail.example.com)";
    let s = s.trim_end_matches('.');
    if s.is_empty() || s.len() > 253 {
        return Err(Expected::new(expected));
    }
    for label in s.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(Expected::new(expected));
        }
    }
    Ok(s.to_ascii_lowercase())
}

/// A CIDR network; a bare address means a single host.
pub fn parse_cidr(s: &str) -> Result<IpNet, Expected> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    Err(Expected::new(
        "a network in CIDR notation such as 192.0.2.0/24 or 2001:db8::/32",
    ))
}

/// An `addr:port` to listen on, with a port in 1..=65535.
pub fn parse_listen(s: &str) -> Result<SocketAddr, Expected> {
    let addr: SocketAddr = s.trim().parse().map_err(|_| {
        Expected::new("an address and port such as 127.0.0.1:25 or [::1]:25, port 1-65535")
    })?;
    if addr.port() == 0 {
        return Err(Expected::new("a port from 1 to 65535"));
    }
    Ok(addr)
}

/// `host:port`, `[v6]:port`, or `host` (port 25).
pub fn parse_hostport(s: &str) -> Result<HostPort, Expected> {
    let expected = || Expected::new("host:port such as relay.example.net:25 or [192.0.2.1]:587");
    let s = s.trim();
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, tail) = rest.split_once(']').ok_or_else(expected)?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse::<u16>().map_err(|_| expected())?,
            None if tail.is_empty() => 25,
            None => return Err(expected()),
        };
        (
            h.parse::<IpAddr>().map_err(|_| expected())?.to_string(),
            port,
        )
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse::<u16>().map_err(|_| expected())?),
            None => (s.to_string(), 25),
        }
    };
    if port == 0 {
        return Err(expected());
    }
    let host = if host.parse::<IpAddr>().is_ok() {
        host
    } else {
        parse_hostname(&host).map_err(|_| expected())?
    };
    Ok(HostPort { host, port })
}

/// `"CIDR action"`.
pub fn parse_access_rule(s: &str) -> Result<AccessRule, Expected> {
    let expected = || {
        Expected(format!(
            "\"CIDR action\" with action {} (such as \"192.0.2.0/24 reject\")",
            AccessAction::WORDS.join(", ")
        ))
    };
    let mut words = s.split_whitespace();
    let (Some(net), Some(action), None) = (words.next(), words.next(), words.next()) else {
        return Err(expected());
    };
    let network = parse_cidr(net).map_err(|_| expected())?;
    let action = AccessAction::from_word(&action.to_ascii_lowercase()).ok_or_else(expected)?;
    Ok(AccessRule { network, action })
}

/// `user@domain` or `@domain`, lower-casing the domain.
pub fn parse_mailbox(s: &str) -> Result<String, Expected> {
    let expected = || Expected::new("an address user@domain, or @domain for the whole domain");
    let (local, domain) = s.rsplit_once('@').ok_or_else(expected)?;
    if local.bytes().any(|b| b <= b' ' || b == 0x7f) || local.len() > 64 {
        return Err(expected());
    }
    let domain = parse_hostname(domain).map_err(|_| expected())?;
    Ok(format!("{local}@{domain}"))
}

/// Free text on one line.
pub fn check_text(s: &str, max: usize) -> Result<(), Expected> {
    if s.contains(['\r', '\n', '\0']) {
        return Err(Expected::new("one line of text without CR, LF or NUL"));
    }
    if s.len() > max {
        return Err(Expected(format!("at most {max} octets")));
    }
    if s.chars().any(|c| c.is_control() && c != '\t') {
        return Err(Expected::new("text without control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("25M"), Ok(25 * 1024 * 1024));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("10K"), Ok(10240));
        assert!(parse_size("25X").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }

    #[test]
    fn durations_within_a_range() {
        let v = |s: &str| toml::Value::String(s.to_string());
        assert_eq!(
            duration_within(&v("2s"), 1000, 60_000, "5s").unwrap(),
            Duration::from_secs(2)
        );
        let e = duration_within(&v("2m"), 1000, 60_000, "5s").unwrap_err();
        assert_eq!(e.0, "a duration from 1s to 1m");
        let e = duration_within(&toml::Value::Integer(5), 1000, 60_000, "5s").unwrap_err();
        assert_eq!(e.0, "a duration string with a unit, such as \"5s\"");
        assert!(duration_within(&v("5"), 1000, 60_000, "5s").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5d"), Ok(Duration::from_secs(5 * 86400)));
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("s").is_err());
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn networks_and_hosts() {
        assert!(parse_cidr("10.0.0.0/8").is_ok());
        assert!(parse_cidr("::1").is_ok());
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("banana").is_err());
        assert_eq!(parse_listen("127.0.0.1:2525").map(|a| a.port()), Ok(2525));
        assert!(parse_listen("127.0.0.1:0").is_err());
        assert!(parse_listen("127.0.0.1:70000").is_err());
        assert_eq!(parse_hostport("[::1]:2526").map(|h| h.port), Ok(2526));
        assert_eq!(parse_hostport("relay.example").map(|h| h.port), Ok(25));
        assert!(parse_hostport("a b:25").is_err());
        assert!(parse_hostname("mail.example.com").is_ok());
        assert!(parse_hostname("bad host").is_err());
        assert!(parse_access_rule("192.0.2.0/24 reject").is_ok());
        assert!(parse_access_rule("192.0.2.0/24 maybe").is_err());
        assert_eq!(
            parse_mailbox("Bob@EXAMPLE.test"),
            Ok("Bob@example.test".to_string())
        );
        assert!(parse_mailbox("bob").is_err());
    }

    #[test]
    fn text() {
        assert!(check_text("{hostname} ESMTP", 400).is_ok());
        assert!(check_text("a\r\nb", 400).is_err());
        assert!(check_text("ab", 1).is_err());
    }
}
