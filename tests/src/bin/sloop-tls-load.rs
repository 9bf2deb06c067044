//! `sloop-tls-load`: a STARTTLS SMTP load generator that treats every server the same
//! (bench/tls-bench.py drives it against Sloop and Postfix).
//!
//! `sloop-tls-load PORT SESSIONS MESSAGES SIZE RESUME(on|off) RCPT`: SESSIONS threads
//! send MESSAGES messages in all, one per connection: connect, greeting, EHLO,
//! STARTTLS, handshake (with session resumption from a shared client cache when RESUME
//! is `on`), EHLO, MAIL, RCPT, DATA (SIZE octets), QUIT. Prints one line:
//! `ok=N failed=N resumed=N secs=S msgs_per_sec=R`. The server certificate is not
//! verified (handshake signatures are).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Any(Arc<CryptoProvider>);

impl ServerCertVerifier for Any {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn reply<R: BufRead>(r: &mut R) -> std::io::Result<u16> {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0));
        }
    }
}

fn expect<R: BufRead>(r: &mut R, want: u16) -> std::io::Result<()> {
    let got = reply(r)?;
    if got / 100 == want / 100 {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("expected {want}, got {got}")))
    }
}

/// One message on one connection; returns whether the TLS session was resumed.
fn one(port: u16, cfg: &Arc<ClientConfig>, body: &[u8], rcpt: &str) -> std::io::Result<bool> {
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(60)))?;
    tcp.set_nodelay(true)?;
    let mut r = BufReader::new(tcp.try_clone()?);
    let mut w = tcp;
    expect(&mut r, 220)?;
    w.write_all(b"EHLO load.test\r\n")?;
    expect(&mut r, 250)?;
    w.write_all(b"STARTTLS\r\n")?;
    expect(&mut r, 220)?;
    let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
    let conn = ClientConnection::new(cfg.clone(), name).map_err(std::io::Error::other)?;
    let mut tls = StreamOwned::new(conn, w);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    let resumed = matches!(
        tls.conn.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
    let mut tr = BufReader::new(TlsRw(&mut tls));
    tr.get_mut().write_all(b"EHLO load.test\r\n")?;
    expect(&mut tr, 250)?;
    let cmds = format!("MAIL FROM:<load@load.test>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n");
    tr.get_mut().write_all(cmds.as_bytes())?;
    expect(&mut tr, 250)?;
    expect(&mut tr, 250)?;
    expect(&mut tr, 354)?;
    tr.get_mut().write_all(body)?;
    tr.get_mut().write_all(b".\r\n")?;
    expect(&mut tr, 250)?;
    tr.get_mut().write_all(b"QUIT\r\n")?;
    let _ = reply(&mut tr);
    Ok(resumed)
}

struct TlsRw<'a>(&'a mut StreamOwned<ClientConnection, TcpStream>);

impl Read for TlsRw<'_> {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(b)
    }
}

impl Write for TlsRw<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() != 6 {
        eprintln!("usage: sloop-tls-load PORT SESSIONS MESSAGES SIZE on|off RCPT");
        std::process::exit(64);
    }
    let port: u16 = a[0].parse().expect("port");
    let sessions: u64 = a[1].parse().expect("sessions");
    let messages: u64 = a[2].parse().expect("messages");
    let size: usize = a[3].parse().expect("size");
    let resume = a[4] == "on";
    let rcpt = a[5].clone();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Any(provider)))
        .with_no_client_auth();
    if !resume {
        cfg.resumption = rustls::client::Resumption::disabled();
    }
    let cfg = Arc::new(cfg);
    let mut body = b"Subject: tls load\r\n\r\n".to_vec();
    while body.len() < size {
        body.extend_from_slice(
            b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123\r\n",
        );
    }
    let body = Arc::new(body);
    let (next, ok, failed, resumed) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let start = Instant::now();
    let threads: Vec<_> = (0..sessions)
        .map(|_| {
            let (next, ok, failed, resumed) =
                (next.clone(), ok.clone(), failed.clone(), resumed.clone());
            let (cfg, body, rcpt) = (cfg.clone(), body.clone(), rcpt.clone());
            std::thread::spawn(move || {
                while next.fetch_add(1, Ordering::Relaxed) < messages {
                    match one(port, &cfg, &body, &rcpt) {
                        Ok(r) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            resumed.fetch_add(u64::from(r), Ordering::Relaxed);
                        }
                        Err(e) => {
                            if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                                eprintln!("sloop-tls-load: {e}");
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let secs = start.elapsed().as_secs_f64();
    let n = ok.load(Ordering::Relaxed);
    println!(
        "ok={n} failed={} resumed={} secs={secs:.3} msgs_per_sec={:.1}",
        failed.load(Ordering::Relaxed),
        resumed.load(Ordering::Relaxed),
        n as f64 / secs
    );
}
