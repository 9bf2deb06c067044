//! `auth.backend = "dovecot"`: checks credentials with Dovecot's authentication server
//! over its client socket (`auth.dovecot_socket`, Dovecot's `auth-client` listener),
//! speaking the Dovecot SASL protocol version 1.x as Postfix does:
//!
//! ```text
//! C: VERSION 1 2          C: CPID <pid>
//! S: VERSION 1 2  MECH PLAIN plaintext ...  SPID  CUID  COOKIE  DONE
//! C: AUTH <id> PLAIN service=smtp secured nologin rip=<client> resp=<base64>
//! S: OK <id> user=alice   |   FAIL <id> ...   |   FAIL <id> ... temp
//! ```
//!
//! (fields separated by TAB). Both mechanisms the smtpd offers are passed to Dovecot
//! as PLAIN, since the smtpd has decoded the user and password already; Dovecot's own
//! failure delays and user lookups apply on its side. Every step has a deadline; a
//! socket that cannot be reached, a protocol error, a `FAIL` marked `temp` or a
//! deadline gives [`DovecotError`] and the client `454 4.7.0`.

use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Why Dovecot could not answer.
#[derive(Debug)]
pub enum DovecotError {
    Connect(std::io::Error),
    Io(std::io::Error),
    Protocol(String),
    /// Dovecot said `FAIL ... temp` (its backend is down).
    Temporary,
}

impl fmt::Display for DovecotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DovecotError::Connect(e) => write!(f, "cannot connect to the Dovecot auth socket: {e}"),
            DovecotError::Io(e) => write!(f, "Dovecot auth socket: {e}"),
            DovecotError::Protocol(why) => write!(f, "Dovecot auth protocol: {why}"),
            DovecotError::Temporary => f.write_str("Dovecot reported a temporary failure"),
        }
    }
}

impl std::error::Error for DovecotError {}

/// Asks Dovecot whether `user`/`password` are valid for a client at `client`.
pub fn check(
    socket: &Path,
    user: &str,
    password: &[u8],
    client: IpAddr,
    timeout: Duration,
) -> Result<bool, DovecotError> {
    let stream = UnixStream::connect(socket).map_err(DovecotError::Connect)?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(DovecotError::Io)?;
    let mut writer = stream.try_clone().map_err(DovecotError::Io)?;
    let mut reader = BufReader::new(stream);
    writer
        .write_all(format!("VERSION\t1\t2\nCPID\t{}\n", std::process::id()).as_bytes())
        .map_err(DovecotError::Io)?;
    let mut plain = false;
    loop {
        let line = read_line(&mut reader)?;
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.first().copied() {
            Some("VERSION") if fields.get(1) != Some(&"1") => {
                return Err(DovecotError::Protocol(format!(
                    "unsupported major version {:?}",
                    fields.get(1)
                )))
            }
            Some("MECH")
                if fields
                    .get(1)
                    .is_some_and(|m| m.eq_ignore_ascii_case("PLAIN")) =>
            {
                plain = true
            }
            Some("DONE") => break,
            _ => {}
        }
    }
    if !plain {
        return Err(DovecotError::Protocol(
            "the PLAIN mechanism is not enabled (auth_mechanisms)".into(),
        ));
    }
    let mut resp = Vec::with_capacity(user.len() * 2 + password.len() + 2);
    resp.push(0);
    resp.extend_from_slice(user.as_bytes());
    resp.push(0);
    resp.extend_from_slice(password);
    let request = format!(
        "AUTH\t1\tPLAIN\tservice=smtp\tsecured\tnologin\trip={}\tresp={}\n",
        escape(&client.to_string()),
        encode_base64(&resp)
    );
    writer
        .write_all(request.as_bytes())
        .map_err(DovecotError::Io)?;
    let line = read_line(&mut reader)?;
    let fields: Vec<&str> = line.split('\t').collect();
    match (fields.first().copied(), fields.get(1).copied()) {
        (Some("OK"), Some("1")) => Ok(true),
        (Some("FAIL"), Some("1")) if fields.contains(&"temp") => Err(DovecotError::Temporary),
        (Some("FAIL"), Some("1")) => Ok(false),
        (Some("CONT"), _) => Err(DovecotError::Protocol(
            "a challenge for PLAIN with an initial response".into(),
        )),
        _ => Err(DovecotError::Protocol(format!(
            "unexpected reply {:?}",
            line.chars().take(80).collect::<String>()
        ))),
    }
}

/// One line, without its LF, at most 64 KiB.
fn read_line<R: BufRead>(r: &mut R) -> Result<String, DovecotError> {
    let mut buf = Vec::new();
    let n = std::io::Read::take(&mut *r, 64 * 1024)
        .read_until(b'\n', &mut buf)
        .map_err(DovecotError::Io)?;
    if n == 0 || buf.last() != Some(&b'\n') {
        return Err(DovecotError::Protocol("connection closed mid-line".into()));
    }
    buf.pop();
    String::from_utf8(buf).map_err(|_| DovecotError::Protocol("a line that is not UTF-8".into()))
}

/// Dovecot's TAB escaping: `\001` -> `\0011`, TAB -> `\001t`, LF -> `\001n`.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\u{1}' => out.push_str("\u{1}1"),
            '\t' => out.push_str("\u{1}t"),
            '\n' => out.push_str("\u{1}n"),
            '\r' => out.push_str("\u{1}r"),
            c => out.push(c),
        }
    }
    out
}

/// Standard base64 with padding.
pub fn encode_base64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn base64_and_escaping() {
        assert_eq!(encode_base64(b"\0alice\0pw"), "AGFsaWNlAHB3");
        assert_eq!(encode_base64(b"a"), "YQ==");
        assert_eq!(
            crate::auth::sasl::decode_base64(&encode_base64(b"xyz12")).unwrap(),
            b"xyz12"
        );
        assert_eq!(escape("a\tb\nc\u{1}"), "a\u{1}tb\u{1}nc\u{1}1");
    }

    /// A scripted server: answers the handshake, then `reply` to the AUTH line.
    fn fake(
        reply: &'static str,
        mechs: &'static str,
    ) -> (std::path::PathBuf, std::thread::JoinHandle<String>) {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sloop-dovecot-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("auth-client");
        let l = UnixListener::bind(&path).unwrap();
        let h = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            w.write_all(
                format!("VERSION\t1\t2\n{mechs}SPID\t1\nCUID\t2\nCOOKIE\tab\nDONE\n").as_bytes(),
            )
            .unwrap();
            let mut line = String::new();
            let mut auth = String::new();
            while r.read_line(&mut line).unwrap() > 0 {
                if line.starts_with("AUTH\t") {
                    auth = line.clone();
                    w.write_all(reply.as_bytes()).unwrap();
                    break;
                }
                line.clear();
            }
            auth
        });
        (path, h)
    }

    #[test]
    fn ok_fail_and_temp_from_a_scripted_server() {
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let t = Duration::from_secs(5);
        let (p, h) = fake("OK\t1\tuser=alice\n", "MECH\tPLAIN\tplaintext\n");
        assert!(check(&p, "alice", b"pw", ip, t).unwrap());
        let line = h.join().unwrap();
        assert_eq!(
            line,
            "AUTH\t1\tPLAIN\tservice=smtp\tsecured\tnologin\trip=192.0.2.9\tresp=AGFsaWNlAHB3\n"
        );
        let (p, _h) = fake(
            "FAIL\t1\tuser=alice\n",
            "MECH\tPLAIN\tplaintext\nMECH\tLOGIN\n",
        );
        assert!(!check(&p, "alice", b"pw", ip, t).unwrap());
        let (p, _h) = fake("FAIL\t1\ttemp\n", "MECH\tPLAIN\n\n");
        assert!(matches!(
            check(&p, "alice", b"pw", ip, t),
            Err(DovecotError::Temporary)
        ));
        let (p, _h) = fake("OK\t1\n", "MECH\tLOGIN\n");
        assert!(matches!(
            check(&p, "alice", b"pw", ip, t),
            Err(DovecotError::Protocol(_))
        ));
        assert!(matches!(
            check(Path::new("/nonexistent/auth"), "a", b"b", ip, t),
            Err(DovecotError::Connect(_))
        ));
    }
}
