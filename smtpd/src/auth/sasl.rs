//! The SASL mechanisms AUTH offers (RFC 4954): PLAIN (RFC 4616) and LOGIN, decoded
//! without I/O. The session feeds the AUTH command's argument and each client
//! response line; [`Exchange`] says what to send next or yields the credentials.

use std::fmt;

/// Longest response line a client may send during AUTH (RFC 4954 §4: 12288 octets).
pub const MAX_SASL_LINE: usize = 12288;

/// A password that never shows up in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Credentials decoded from an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `PLAIN` or `LOGIN`.
    pub mechanism: &'static str,
    pub username: String,
    pub password: Secret,
}

/// Where an exchange stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exchange {
    /// Send `334 <challenge>` and feed the client's next line.
    Challenge(&'static str, Pending),
    Done(Credentials),
    /// The client sent `*` (RFC 4954 §4): `501 5.7.0`.
    Cancelled,
    /// Not base64, or not the mechanism's format: `501 5.5.2`.
    Malformed,
}

/// What an unfinished exchange waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    PlainResponse,
    LoginUser,
    LoginPassword(String),
}

/// The mechanisms offered, as the EHLO keyword lists them.
pub const MECHANISMS: &str = "PLAIN LOGIN";

/// Starts an exchange for `AUTH <mechanism> [initial-response]`; `None` for a
/// mechanism that is not offered (`504 5.5.4`).
pub fn start(mechanism: &str, initial: Option<&str>) -> Option<Exchange> {
    match mechanism.to_ascii_uppercase().as_str() {
        "PLAIN" => Some(match initial {
            None => Exchange::Challenge("", Pending::PlainResponse),
            Some(r) => step(Pending::PlainResponse, r),
        }),
        "LOGIN" => Some(match initial {
            // "Username:"
            None => Exchange::Challenge("VXNlcm5hbWU6", Pending::LoginUser),
            Some(r) => step(Pending::LoginUser, r),
        }),
        _ => None,
    }
}

/// Feeds the client's response line (without CRLF).
pub fn step(pending: Pending, line: &str) -> Exchange {
    let line = line.trim();
    if line == "*" {
        return Exchange::Cancelled;
    }
    // `=` is an empty initial response (RFC 4954 §4).
    let decoded = if line == "=" {
        Some(Vec::new())
    } else {
        decode_base64(line)
    };
    let Some(bytes) = decoded else {
        return Exchange::Malformed;
    };
    match pending {
        Pending::PlainResponse => plain(&bytes),
        Pending::LoginUser => match String::from_utf8(bytes) {
            // "Password:"
            Ok(u) if valid_name(&u) => {
                Exchange::Challenge("UGFzc3dvcmQ6", Pending::LoginPassword(u))
            }
            _ => Exchange::Malformed,
        },
        Pending::LoginPassword(username) => Exchange::Done(Credentials {
            mechanism: "LOGIN",
            username,
            password: Secret(bytes),
        }),
    }
}

/// `[authzid] NUL authcid NUL passwd`; an authorization identity other than the
/// authentication identity is not supported (the exchange is malformed for us).
fn plain(bytes: &[u8]) -> Exchange {
    let parts: Vec<&[u8]> = bytes.split(|b| *b == 0).collect();
    let [authz, authc, pass] = parts.as_slice() else {
        return Exchange::Malformed;
    };
    let (Ok(authz), Ok(authc)) = (std::str::from_utf8(authz), std::str::from_utf8(authc)) else {
        return Exchange::Malformed;
    };
    if !valid_name(authc) || (!authz.is_empty() && authz != authc) {
        return Exchange::Malformed;
    }
    Exchange::Done(Credentials {
        mechanism: "PLAIN",
        username: authc.to_string(),
        password: Secret(pass.to_vec()),
    })
}

fn valid_name(u: &str) -> bool {
    !u.is_empty() && u.len() <= 255 && !u.chars().any(char::is_control)
}

/// Standard base64 (RFC 4648 §4) with padding; `None` on anything else.
pub fn decode_base64(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn b64(s: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for c in s.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= c.len() {
                    out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn base64_decodes_and_refuses_junk() {
        assert_eq!(decode_base64("YWxpY2U=").unwrap(), b"alice");
        assert_eq!(decode_base64("").unwrap(), b"");
        assert_eq!(decode_base64("YQ==").unwrap(), b"a");
        assert!(decode_base64("YQ=").is_none());
        assert!(decode_base64("Y===").is_none());
        assert!(decode_base64("YQ==YQ==").is_none());
        assert!(decode_base64("a b=").is_none());
        for s in [&b""[..], b"a", b"ab", b"abc", b"\0alice\0pw"] {
            assert_eq!(decode_base64(&b64(s)).unwrap(), s);
        }
    }

    #[test]
    fn plain_with_and_without_initial_response() {
        let r = b64(b"\0alice\0s3cret");
        let Some(Exchange::Done(c)) = start("plain", Some(&r)) else {
            panic!()
        };
        assert_eq!((c.mechanism, c.username.as_str()), ("PLAIN", "alice"));
        assert_eq!(c.password.0, b"s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
        let Some(Exchange::Challenge("", p)) = start("PLAIN", None) else {
            panic!()
        };
        assert!(matches!(step(p, &r), Exchange::Done(_)));
        assert_eq!(
            start("PLAIN", Some(&b64(b"bob\0alice\0pw"))),
            Some(Exchange::Malformed),
            "proxy authorization is not supported"
        );
        assert_eq!(
            start("PLAIN", Some(&b64(b"alice\0pw"))),
            Some(Exchange::Malformed)
        );
        assert_eq!(start("PLAIN", Some("!!!!")), Some(Exchange::Malformed));
        assert_eq!(start("PLAIN", Some("*")), Some(Exchange::Cancelled));
        assert_eq!(start("CRAM-MD5", None), None);
    }

    #[test]
    fn login_asks_for_user_then_password() {
        let Some(Exchange::Challenge("VXNlcm5hbWU6", p)) = start("LOGIN", None) else {
            panic!()
        };
        let Exchange::Challenge("UGFzc3dvcmQ6", p) = step(p, &b64(b"alice")) else {
            panic!()
        };
        let Exchange::Done(c) = step(p, &b64(b"pw")) else {
            panic!()
        };
        assert_eq!((c.mechanism, c.username.as_str()), ("LOGIN", "alice"));
        assert_eq!(decode_base64("VXNlcm5hbWU6").unwrap(), b"Username:");
        assert_eq!(decode_base64("UGFzc3dvcmQ6").unwrap(), b"Password:");
        let Some(Exchange::Challenge(_, p)) = start("LOGIN", Some(&b64(b"alice"))) else {
            panic!()
        };
        assert_eq!(step(p, "*"), Exchange::Cancelled);
    }
}
