//! STARTTLS against a loopback server with a self-signed certificate: upgrade and
//! re-EHLO, a declined STARTTLS, a broken handshake retried in plaintext, and a
//! response injection refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::mx::Candidate;
use super::smtp_client::{ClientConfig, Session, Transaction};
use super::tls;
use crate::message::QueuedMessage;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use sloop_common::spool::status::Outcome;
use sloop_common::spool::{commit, Envelope, QueueState, Recipient, Spool};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Good,
    Decline,
    Garbage,
    Inject,
}

/// Lines received, each marked with whether it came over TLS.
type Log = Arc<Mutex<Vec<(bool, String)>>>;

fn server_config() -> Arc<ServerConfig> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = CertificateDer::from(ck.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    Arc::new(cfg)
}

/// Serves one connection per entry of `modes`, in order.
fn sink(modes: Vec<Mode>) -> (u16, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let log: Log = Arc::default();
    let l2 = log.clone();
    let tls = server_config();
    std::thread::spawn(move || {
        for mode in modes {
            let (s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            serve(s, mode, &tls, &l2);
        }
    });
    (port, log)
}

fn serve(s: TcpStream, mode: Mode, tls: &Arc<ServerConfig>, log: &Log) {
    let mut r = BufReader::new(s);
    r.get_mut().write_all(b"220 sink ESMTP\r\n").unwrap();
    if !dialogue(&mut r, false, mode, log) {
        return;
    }
    let tcp = r.into_inner();
    let conn = ServerConnection::new(tls.clone()).unwrap();
    let mut r = BufReader::new(StreamOwned::new(conn, tcp));
    dialogue(&mut r, true, mode, log);
}

/// Runs SMTP until QUIT or EOF; returns true when the stream should switch to TLS.
fn dialogue<S: Read + Write>(r: &mut BufReader<S>, tls: bool, mode: Mode, log: &Log) -> bool {
    let mut in_data = false;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return false;
        }
        let line = line.trim_end().to_string();
        log.lock().unwrap().push((tls, line.clone()));
        let reply: &[u8] = if in_data {
            if line != "." {
                continue;
            }
            in_data = false;
            b"250 2.0.0 queued\r\n"
        } else if line.starts_with("EHLO") && !tls {
            b"250-sink\r\n250-PIPELINING\r\n250 STARTTLS\r\n"
        } else if line.starts_with("EHLO") {
            b"250-sink\r\n250 PIPELINING\r\n"
        } else if line == "STARTTLS" {
            let (reply, switch): (&[u8], bool) = match mode {
                Mode::Good => (b"220 2.0.0 go ahead\r\n", true),
                Mode::Decline => (b"454 4.7.0 TLS not available\r\n", false),
                Mode::Garbage => (b"220 2.0.0 go ahead\r\n", false),
                Mode::Inject => (b"220 2.0.0 go ahead\r\n250 injected\r\n", true),
            };
            r.get_mut().write_all(reply).unwrap();
            r.get_mut().flush().unwrap();
            if mode == Mode::Garbage {
                // Wait for the ClientHello, then answer it with something else.
                let mut hello = [0u8; 16];
                let _ = r.get_mut().read(&mut hello);
                let _ = r.get_mut().write_all(b"this is not TLS\r\n");
                return false;
            }
            if switch {
                return true;
            }
            continue;
        } else if line == "DATA" {
            in_data = true;
            b"354 go\r\n"
        } else if line == "QUIT" {
            let _ = r.get_mut().write_all(b"221 bye\r\n");
            let _ = r.get_mut().flush();
            return false;
        } else {
            b"250 ok\r\n"
        };
        r.get_mut().write_all(reply).unwrap();
        r.get_mut().flush().unwrap();
    }
}

fn client() -> ClientConfig {
    ClientConfig {
        helo_name: "me.test".into(),
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(5),
        data_timeout: Duration::from_secs(5),
        tls: Some(tls::client_config().unwrap()),
        verify_tls: None,
        level: sloop_common::config::TlsLevel::May,
        credentials: None,
    }
}

fn candidate(port: u16) -> Candidate {
    Candidate {
        name: "localhost".into(),
        addr: ([127, 0, 0, 1], port).into(),
    }
}

fn message(name: &str) -> (std::path::PathBuf, QueuedMessage) {
    let dir = std::env::temp_dir().join(format!("sloop-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let spool = Spool::new(dir.join("spool"));
    spool.ensure_layout().unwrap();
    let env = Envelope::new("s@x.test", vec![Recipient::new("u@y.test")]);
    let id = commit(&spool, &mut &b"Subject: t\r\n\r\nsecret\r\n"[..], env, 0).unwrap();
    let msg = QueuedMessage::open(&spool.path(QueueState::Incoming, &id)).unwrap();
    (dir, msg)
}

fn deliver(name: &str, port: u16) -> (bool, Outcome) {
    let (dir, msg) = message(name);
    let mut s = Session::open(&candidate(port), &client()).unwrap();
    let rcpts = vec!["u@y.test".to_string()];
    let t = Transaction {
        sender: "s@x.test",
        recipients: &rcpts,
        message: &msg,
    };
    let tls = s.is_tls();
    let out = s.send(&t);
    s.quit();
    std::fs::remove_dir_all(&dir).unwrap();
    (tls, out.results[0].outcome)
}

#[test]
fn starttls_encrypts_the_transaction() {
    let (port, log) = sink(vec![Mode::Good]);
    assert_eq!(deliver("good", port), (true, Outcome::Ok));
    let log = log.lock().unwrap().clone();
    let plain: Vec<&str> = log
        .iter()
        .filter(|(t, _)| !t)
        .map(|(_, l)| l.as_str())
        .collect();
    assert_eq!(plain, vec!["EHLO me.test", "STARTTLS"]);
    assert!(
        log.contains(&(true, "EHLO me.test".to_string())),
        "EHLO again over TLS"
    );
    assert!(
        log.contains(&(true, "secret".to_string())),
        "content over TLS"
    );
}

#[test]
fn declined_starttls_continues_in_plaintext() {
    let (port, log) = sink(vec![Mode::Decline]);
    assert_eq!(deliver("decline", port), (false, Outcome::Ok));
    assert!(log.lock().unwrap().iter().any(|(t, l)| !t && l == "secret"));
}

#[test]
fn failed_handshake_is_retried_without_tls() {
    let (port, log) = sink(vec![Mode::Garbage, Mode::Good]);
    assert_eq!(deliver("garbage", port), (false, Outcome::Ok));
    let starttls = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, l)| l == "STARTTLS")
        .count();
    assert_eq!(
        starttls, 1,
        "the plaintext retry does not try STARTTLS again"
    );
}

#[test]
fn response_injection_after_starttls_is_refused() {
    let (port, _log) = sink(vec![Mode::Inject]);
    let err = Session::open(&candidate(port), &client()).unwrap_err();
    assert!(err.to_string().contains("injection"), "{err}");
}

fn at_level(level: sloop_common::config::TlsLevel) -> ClientConfig {
    ClientConfig { level, ..client() }
}

#[test]
fn encrypt_refuses_plaintext_and_does_not_retry_without_tls() {
    use sloop_common::config::TlsLevel;
    let (port, log) = sink(vec![Mode::Decline]);
    let err = Session::open(&candidate(port), &at_level(TlsLevel::Encrypt))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("TLS is required (remote.tls = encrypt)"),
        "{err}"
    );
    assert!(!log
        .lock()
        .unwrap()
        .iter()
        .any(|(_, l)| l.starts_with("MAIL")));
    let (port, log) = sink(vec![Mode::Garbage, Mode::Good]);
    let err = Session::open(&candidate(port), &at_level(TlsLevel::Encrypt))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("TLS handshake failed") && err.contains("TLS is required"),
        "{err}"
    );
    assert_eq!(
        log.lock()
            .unwrap()
            .iter()
            .filter(|(_, l)| l.starts_with("EHLO"))
            .count(),
        1,
        "no plaintext retry"
    );
    // `none` never starts TLS even when offered.
    let (port, log) = sink(vec![Mode::Good]);
    let s = Session::open(&candidate(port), &at_level(TlsLevel::None)).unwrap();
    assert!(!s.is_tls());
    s.quit();
    assert!(!log.lock().unwrap().iter().any(|(_, l)| l == "STARTTLS"));
}

#[test]
fn verify_without_a_trusted_issuer_fails() {
    use sloop_common::config::TlsLevel;
    let (port, _log) = sink(vec![Mode::Good]);
    let mut cfg = at_level(TlsLevel::Verify);
    // Only the system roots: the sink's self-signed certificate is not among them.
    cfg.verify_tls = tls::verifying_config(None).ok();
    let err = Session::open(&candidate(port), &cfg)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("UnknownIssuer") && err.contains("remote.tls = verify"),
        "{err}"
    );
}
