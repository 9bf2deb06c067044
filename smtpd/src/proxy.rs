//! The PROXY protocol (HAProxy's, versions 1 and 2) on `smtpd.proxy_listen`: a load
//! balancer in front of Sloop tells it the real client address in a header before the
//! SMTP dialogue, and that address is the one every rule, log line and `Received:`
//! header uses.
//!
//! Only peers in `smtpd.proxy_trusted` may send the header (anyone else could claim
//! any address, a relay network's included): a connection from elsewhere is closed at
//! once. The header must arrive complete within `smtpd.proxy_timeout`; a missing,
//! malformed or late header closes the connection without a reply (the peer is a
//! load balancer, not an SMTP client). `PROXY UNKNOWN` (v1) and the `LOCAL` command
//! (v2, health checks) keep the connection's own address. The header is read with
//! `MSG_PEEK` first and then exactly its length consumed, so no SMTP octet is eaten.

use crate::conn::Conn;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

/// The v2 signature.
const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 header, CRLF included.
const V1_MAX: usize = 107;
/// Longest header read (v2 with TLVs is bounded by this too).
const MAX_HEADER: usize = 536;

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyError {
    Malformed(&'static str),
    Timeout,
    Closed,
    Io(String),
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::Malformed(why) => write!(f, "malformed PROXY header: {why}"),
            ProxyError::Timeout => f.write_str("no PROXY header within smtpd.proxy_timeout"),
            ProxyError::Closed => f.write_str("connection closed before the PROXY header"),
            ProxyError::Io(e) => write!(f, "reading the PROXY header: {e}"),
        }
    }
}

/// A parsed header: the client's address (`None`: keep the connection's) and length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub source: Option<SocketAddr>,
    pub len: usize,
}

/// Parses the start of `b`: `Ok(None)` when more octets are needed.
pub fn parse(b: &[u8]) -> Result<Option<Header>, ProxyError> {
    if b.is_empty() {
        return Ok(None);
    }
    if V2_SIG.starts_with(&b[..b.len().min(12)]) {
        return parse_v2(b);
    }
    if b"PROXY ".starts_with(&b[..b.len().min(6)]) {
        return parse_v1(b);
    }
    Err(ProxyError::Malformed("neither v1 nor v2"))
}

fn parse_v1(b: &[u8]) -> Result<Option<Header>, ProxyError> {
    let Some(lf) = b.iter().position(|&c| c == b'\n') else {
        return if b.len() >= V1_MAX {
            Err(ProxyError::Malformed("v1 line too long"))
        } else {
            Ok(None)
        };
    };
    if lf == 0 || b[lf - 1] != b'\r' || lf + 1 > V1_MAX {
        return Err(ProxyError::Malformed("v1 line not ended by CRLF"));
    }
    let line =
        std::str::from_utf8(&b[..lf - 1]).map_err(|_| ProxyError::Malformed("v1 not ASCII"))?;
    let f: Vec<&str> = line.split(' ').collect();
    let source = match f.as_slice() {
        ["PROXY", "UNKNOWN", ..] => None,
        ["PROXY", proto @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let src: IpAddr = src
                .parse()
                .map_err(|_| ProxyError::Malformed("v1 source"))?;
            let _: IpAddr = dst
                .parse()
                .map_err(|_| ProxyError::Malformed("v1 destination"))?;
            if (*proto == "TCP4") != src.is_ipv4() {
                return Err(ProxyError::Malformed("v1 family mismatch"));
            }
            let sport: u16 = sport
                .parse()
                .map_err(|_| ProxyError::Malformed("v1 port"))?;
            let _: u16 = dport
                .parse()
                .map_err(|_| ProxyError::Malformed("v1 port"))?;
            Some(SocketAddr::new(src, sport))
        }
        _ => return Err(ProxyError::Malformed("v1 fields")),
    };
    Ok(Some(Header {
        source,
        len: lf + 1,
    }))
}

fn parse_v2(b: &[u8]) -> Result<Option<Header>, ProxyError> {
    if b.len() < 16 {
        return Ok(None);
    }
    let ver_cmd = b[12];
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::Malformed("v2 version"));
    }
    let len = 16 + usize::from(u16::from_be_bytes([b[14], b[15]]));
    if len > MAX_HEADER {
        return Err(ProxyError::Malformed("v2 header too long"));
    }
    if b.len() < len {
        return Ok(None);
    }
    let body = &b[16..len];
    let source = match (ver_cmd & 0x0f, b[13]) {
        // LOCAL: the proxy's own connection (health check).
        (0, _) => None,
        (1, 0x11) if body.len() >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Some(SocketAddr::new(
                IpAddr::V4(ip),
                u16::from_be_bytes([body[8], body[9]]),
            ))
        }
        (1, 0x21) if body.len() >= 36 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&body[..16]);
            let port = u16::from_be_bytes([body[32], body[33]]);
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port))
        }
        // UNSPEC or a family without an IP address: keep the connection's.
        (1, 0x00) => None,
        (1, _) => return Err(ProxyError::Malformed("v2 address family or length")),
        _ => return Err(ProxyError::Malformed("v2 command")),
    };
    Ok(Some(Header { source, len }))
}

/// The PROXY step of a connection on `smtpd.proxy_listen` from `peer`: refuses an
/// untrusted peer, reads the header under the watchdog; returns the client's address
/// and port (the proxy's own when the header says `UNKNOWN`), or `None` (logged) when
/// the connection must be closed.
pub fn accept(
    policy: &crate::session::Policy,
    conn: &mut Conn,
    peer: std::net::SocketAddr,
    watchdog: &crate::watchdog::Watchdog,
) -> Option<std::net::SocketAddr> {
    let peer_port = peer.port();
    let peer = crate::session::policy::canonical(peer.ip());
    let p = &policy.cfg.proxy;
    if !p.trusted.iter().any(|n| n.contains(&peer)) {
        log::warn!(
            "reject: CONNECT from unknown[{peer}] to the PROXY listener: not in smtpd.proxy_trusted"
        );
        return None;
    }
    watchdog.attach(None, Vec::new());
    watchdog.arm("proxy header", Instant::now() + p.timeout);
    let result = read_header(conn, std::net::SocketAddr::new(peer, peer_port), p.timeout);
    watchdog.detach();
    match result {
        Ok(client) => Some(std::net::SocketAddr::new(
            crate::session::policy::canonical(client.ip()),
            client.port(),
        )),
        Err(e) => {
            log::warn!("PROXY from [{peer}]: {e}; connection closed");
            None
        }
    }
}

/// Reads the header from `conn` within `timeout`; returns the client address to use.
pub fn read_header(
    conn: &mut Conn,
    peer: std::net::SocketAddr,
    timeout: Duration,
) -> Result<std::net::SocketAddr, ProxyError> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; MAX_HEADER];
    loop {
        let n = conn
            .peek_raw(&mut buf, deadline)
            .map_err(|e| ProxyError::Io(e.to_string()))?;
        match n {
            None => return Err(ProxyError::Timeout),
            Some(0) => return Err(ProxyError::Closed),
            Some(n) => match parse(&buf[..n])? {
                Some(h) => {
                    conn.discard_raw(h.len, deadline)
                        .map_err(|e| ProxyError::Io(e.to_string()))?;
                    return Ok(h.source.unwrap_or(peer));
                }
                None if n == MAX_HEADER => return Err(ProxyError::Malformed("too long")),
                // Part of a header: wait a little for the rest.
                None => {
                    if Instant::now() >= deadline {
                        return Err(ProxyError::Timeout);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn v1_headers() {
        let h = parse(b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\nEHLO x\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.source, Some("192.0.2.1:56324".parse().unwrap()));
        assert_eq!(h.len, 44);
        let h = parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 25\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            h.source.unwrap().ip(),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap().source, None);
        assert_eq!(parse(b"PROXY TCP4 192.0.2.1").unwrap(), None, "incomplete");
        assert_eq!(parse(b"PRO").unwrap(), None);
        for bad in [
            &b"PROXY TCP4 2001:db8::1 192.0.2.2 1 25\r\n"[..],
            b"PROXY TCP4 192.0.2.1 192.0.2.2 99999 25\r\n",
            b"PROXY TCP4 192.0.2.1\r\n",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 1 25\n",
            b"EHLO client\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let long = [b"PROXY ".as_slice(), &[b'x'; 200]].concat();
        assert!(parse(&long).is_err());
    }

    fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut v = V2_SIG.to_vec();
        v.push(0x20 | cmd);
        v.push(fam);
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn v2_headers() {
        let body = [192, 0, 2, 1, 198, 51, 100, 2, 0xdc, 0x04, 0, 25];
        let mut b = v2(1, 0x11, &body);
        b.extend_from_slice(b"EHLO");
        let h = parse(&b).unwrap().unwrap();
        assert_eq!(h.source, Some("192.0.2.1:56324".parse().unwrap()));
        assert_eq!(h.len, 28);
        assert_eq!(parse(&b[..20]).unwrap(), None, "incomplete");
        let mut six = vec![0x20, 0x01, 0x0d, 0xb8];
        six.extend_from_slice(&[0; 11]);
        six.push(1);
        six.extend_from_slice(&[0; 16]);
        six.extend_from_slice(&[0, 1, 0, 25]);
        assert_eq!(
            parse(&v2(1, 0x21, &six))
                .unwrap()
                .unwrap()
                .source
                .unwrap()
                .ip(),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            parse(&v2(0, 0x00, &[])).unwrap().unwrap().source,
            None,
            "LOCAL"
        );
        assert!(
            parse(&v2(1, 0x11, &body[..4])).is_err(),
            "short address block"
        );
        assert!(parse(&v2(5, 0x11, &body)).is_err(), "bad command");
        let mut bad = v2(1, 0x11, &body);
        bad[12] = 0x11;
        assert!(parse(&bad).is_err(), "bad version");
    }
}
