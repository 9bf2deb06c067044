//! TLS for the SMTP receiver: the server context a worker builds from what `sloopd`
//! handed it, and TLS over the blocking client socket of `conn.rs`.
//!
//! [`TlsContext::load`] reads the sealed memory file named by `SLOOP_TLS_FD` (or, for
//! a worker started by hand or in `--inetd` mode, the configured files themselves)
//! once at start, closes it, and builds a rustls server configuration: TLS 1.2 and
//! 1.3 only (rustls has nothing older), the ring provider's cipher suites, a
//! certificate chosen per client between the configured pairs (ECDSA when the client
//! can verify it, else RSA), and session tickets sealed with the keys `sloopd`
//! shares with every worker ([`SharedTicketer`]), so a client resumes on any worker.
//!
//! [`handshake`] runs the server side of the handshake on a [`Conn`] within a deadline
//! (`tls.handshake_timeout`): a client that stalls, or sends something that is not a
//! ClientHello, costs at most that long and is closed. After it the connection's reads
//! and writes go through [`TlsStream`]. The session state machine never sees any of
//! this: it only learns that TLS is active and with which version and cipher.

use crate::conn::{Conn, ReadOutcome};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::server::{ClientHello, ProducesTickets, ResolvesServerCert, ServerConfig};
use rustls::sign::CertifiedKey;
use rustls::ServerConnection;
use sloop_common::tls_material::{self, Bundle, BundleError, TicketKey, TlsFileError};
use sloop_common::Config;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Instant;

/// Why a worker could not set up TLS.
#[derive(Debug)]
pub enum TlsSetupError {
    Fd(io::Error),
    Bundle(BundleError),
    File(TlsFileError),
    Rustls(rustls::Error),
}

impl fmt::Display for TlsSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsSetupError::Fd(e) => write!(f, "TLS material descriptor: {e}"),
            TlsSetupError::Bundle(e) => write!(f, "{e}"),
            TlsSetupError::File(e) => write!(f, "TLS: {e}"),
            TlsSetupError::Rustls(e) => write!(f, "TLS configuration: {e}"),
        }
    }
}

impl std::error::Error for TlsSetupError {}

/// The worker's TLS server configuration.
#[derive(Debug, Clone)]
pub struct TlsContext {
    pub config: Arc<ServerConfig>,
}

impl TlsContext {
    /// The context for this worker: from `SLOOP_TLS_FD` when `sloopd` passed one, else
    /// from the configured files (a worker started by hand); `None` without TLS.
    pub fn load(cfg: &Config) -> Result<Option<TlsContext>, TlsSetupError> {
        if let Some(fd) = sloop_common::pool_proto::tls_fd_from_env() {
            let owned = crate::fds::Adopter::default()
                .adopt(fd, crate::fds::Kind::TlsBundle)
                .map_err(|e| TlsSetupError::Fd(io::Error::other(e)))?;
            let file = std::fs::File::from(owned);
            let bytes = read_whole(&file).map_err(TlsSetupError::Fd)?;
            drop(file);
            let bundle = Bundle::decode(&bytes).map_err(TlsSetupError::Bundle)?;
            return TlsContext::from_bundle(&bundle).map(Some);
        }
        if !cfg.tls.enabled() {
            return Ok(None);
        }
        let pairs = tls_material::load_configured(cfg).map_err(TlsSetupError::File)?;
        let bundle = Bundle {
            pairs,
            ticket_current: None,
            ticket_previous: None,
            ticket_lifetime: 0,
        };
        TlsContext::from_bundle(&bundle).map(Some)
    }

    /// Builds the server configuration from a bundle.
    pub fn from_bundle(b: &Bundle) -> Result<TlsContext, TlsSetupError> {
        let keys = b.certified_keys().map_err(TlsSetupError::File)?;
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        server_cipher_order(&mut provider.cipher_suites);
        let provider = Arc::new(provider);
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(TlsSetupError::Rustls)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(ByAlgorithm::new(keys)));
        let ticketer = b.ticket_current.as_ref().and_then(|current| {
            SharedTicketer::new(current, b.ticket_previous.as_ref(), b.ticket_lifetime)
        });
        if let Some(t) = ticketer {
            config.ticketer = Arc::new(t);
            config.send_tls13_tickets = 1;
        } else {
            config.send_tls13_tickets = 0;
        }
        // A worker serves one session at a time and tickets carry the state: no
        // per-process session cache (it would not be shared across the pool anyway).
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.ignore_client_order = true;
        Ok(TlsContext {
            config: Arc::new(config),
        })
    }
}

/// The server's preference (`ignore_client_order`): AES-128-GCM, then AES-256-GCM, then
/// ChaCha20-Poly1305, TLS 1.3 before TLS 1.2, as Mozilla's recommended configurations
/// order them. AES-128 is as safe for mail as AES-256 and its suite's SHA-256 runs on
/// the CPU's SHA extensions, where SHA-384 (AES-256's suite) has none: a cheaper
/// handshake and record layer for both sides. rustls's own order puts AES-256 first.
fn server_cipher_order(suites: &mut [rustls::SupportedCipherSuite]) {
    use rustls::CipherSuite as C;
    suites.sort_by_key(|s| {
        let bulk = match s.suite() {
            C::TLS13_AES_128_GCM_SHA256
            | C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
            C::TLS13_AES_256_GCM_SHA384
            | C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
            | C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 1,
            _ => 2,
        };
        (s.tls13().is_none(), bulk)
    });
}

/// Reads a whole (memory) file from offset 0 with `pread`, so workers sharing the
/// descriptor's file offset do not disturb each other.
fn read_whole(f: &std::fs::File) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = f.read_at(&mut chunk, out.len() as u64)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&chunk[..n]);
        if out.len() > 16 * 1024 * 1024 {
            return Err(io::Error::other("TLS material larger than 16 MiB"));
        }
    }
}

/// Picks the first configured pair whose key can sign with a scheme the client
/// offers: the ECDSA pair (listed first) for modern clients, RSA for the rest.
#[derive(Debug)]
struct ByAlgorithm {
    keys: Vec<Arc<CertifiedKey>>,
}

impl ByAlgorithm {
    fn new(mut keys: Vec<Arc<CertifiedKey>>) -> ByAlgorithm {
        // ECDSA and Ed25519 before RSA.
        keys.sort_by_key(|k| k.key.algorithm() == rustls::SignatureAlgorithm::RSA);
        ByAlgorithm { keys }
    }
}

impl ResolvesServerCert for ByAlgorithm {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let schemes = hello.signature_schemes();
        self.keys
            .iter()
            .find(|k| k.key.choose_scheme(schemes).is_some())
            .or_else(|| self.keys.first())
            .cloned()
    }
}

/// Session tickets sealed with ChaCha20-Poly1305 under the key `sloopd` shares with
/// every worker: `key id (8) || nonce (12) || ciphertext+tag`. The previous key still
/// opens tickets; anything else (another key, a forged or cut ticket) is refused and
/// the client does a full handshake.
pub struct SharedTicketer {
    current: ([u8; 8], LessSafeKey),
    previous: Option<([u8; 8], LessSafeKey)>,
    lifetime: u32,
    rng: SystemRandom,
}

impl fmt::Debug for SharedTicketer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedTicketer")
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

fn aead_key(k: &TicketKey) -> Option<([u8; 8], LessSafeKey)> {
    let unbound = UnboundKey::new(&CHACHA20_POLY1305, &k.key).ok()?;
    Some((k.id, LessSafeKey::new(unbound)))
}

impl SharedTicketer {
    /// `None` if a key is unusable (never for the 32-octet keys `sloopd` makes).
    pub fn new(
        current: &TicketKey,
        previous: Option<&TicketKey>,
        lifetime: u32,
    ) -> Option<SharedTicketer> {
        Some(SharedTicketer {
            current: aead_key(current)?,
            previous: previous.and_then(aead_key),
            lifetime: lifetime.max(60),
            rng: SystemRandom::new(),
        })
    }
}

impl ProducesTickets for SharedTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        self.lifetime
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let (id, key) = &self.current;
        let mut sealed = plain.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(id),
            &mut sealed,
        )
        .ok()?;
        let mut out = Vec::with_capacity(8 + NONCE_LEN + sealed.len());
        out.extend_from_slice(id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Some(out)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        if cipher.len() < 8 + NONCE_LEN + 16 {
            return None;
        }
        let (id, rest) = cipher.split_at(8);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let key = [Some(&self.current), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .find(|(kid, _)| kid.as_slice() == id)
            .map(|(_, k)| k)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let plain = key.open_in_place(nonce, Aad::from(id), &mut buf).ok()?;
        Some(plain.to_vec())
    }
}

/// What the session learns once TLS is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: &'static str,
    /// The IANA name of the cipher suite, such as `TLS_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// Symmetric key bits.
    pub bits: u32,
    /// True when the session was resumed from a ticket.
    pub resumed: bool,
}

impl TlsInfo {
    /// `TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)`, as Postfix says it.
    pub fn describe(&self) -> String {
        format!(
            "{} with cipher {} ({}/{} bits)",
            self.version, self.cipher, self.bits, self.bits
        )
    }

    fn of(c: &ServerConnection) -> TlsInfo {
        let version = match c.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            _ => "TLSv1.2",
        };
        let cipher = c
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .unwrap_or("unknown");
        // rustls says TLS13_AES_256_GCM_SHA384 where RFC 8446 (and Postfix's log)
        // says TLS_AES_256_GCM_SHA384.
        let cipher = match cipher.strip_prefix("TLS13_") {
            Some(rest) => format!("TLS_{rest}"),
            None => cipher.to_string(),
        };
        let bits = if cipher.contains("AES_128") { 128 } else { 256 };
        TlsInfo {
            version,
            cipher,
            bits,
            resumed: matches!(c.handshake_kind(), Some(rustls::HandshakeKind::Resumed)),
        }
    }
}

/// Why a handshake did not complete.
#[derive(Debug)]
pub enum HandshakeError {
    /// `tls.handshake_timeout` passed.
    Timeout,
    /// The client closed the connection.
    Eof,
    Io(io::Error),
    /// The client sent something rustls refused (garbage, no common version/cipher).
    Tls(rustls::Error),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Timeout => f.write_str("handshake timeout"),
            HandshakeError::Eof => f.write_str("lost connection"),
            HandshakeError::Io(e) => write!(f, "{e}"),
            HandshakeError::Tls(e) => write!(f, "{e}"),
        }
    }
}

/// TLS state of a connection after the handshake.
#[derive(Debug)]
pub struct TlsStream {
    conn: ServerConnection,
    /// Ciphertext read from the socket and not yet handed to rustls.
    pending: Vec<u8>,
    /// The socket read buffer, allocated once per connection (not per read).
    raw: Vec<u8>,
}

/// Octets of ciphertext read from the socket at a time (one maximal TLS record).
const RAW_READ: usize = 16 * 1024 + 512;

/// Runs the server handshake on `conn` until `deadline`; on success the connection
/// reads and writes through TLS from then on.
pub fn handshake(
    conn: &mut Conn,
    ctx: &TlsContext,
    deadline: Instant,
) -> Result<TlsInfo, HandshakeError> {
    let mut tls = ServerConnection::new(Arc::clone(&ctx.config)).map_err(HandshakeError::Tls)?;
    let mut raw = vec![0u8; RAW_READ];
    let mut pending: Vec<u8> = Vec::new();
    while tls.is_handshaking() {
        flush_tls(conn, &mut tls).map_err(HandshakeError::Io)?;
        if !tls.is_handshaking() {
            break;
        }
        if pending.is_empty() {
            match conn
                .read_raw(&mut raw, deadline)
                .map_err(HandshakeError::Io)?
            {
                ReadOutcome::Data(n) => pending.extend_from_slice(&raw[..n]),
                ReadOutcome::Eof => return Err(HandshakeError::Eof),
                ReadOutcome::Timeout => return Err(HandshakeError::Timeout),
                // Overload began: the handshake keeps its own deadline.
                ReadOutcome::Interrupted => {}
            }
        }
        if let Err(e) = feed(&mut tls, &mut pending) {
            // Tell the client why (an alert), best effort, then give up.
            let _ = flush_tls(conn, &mut tls);
            return Err(match e.into_inner() {
                Some(inner) => match inner.downcast::<rustls::Error>() {
                    Ok(tls_err) => HandshakeError::Tls(*tls_err),
                    Err(other) => HandshakeError::Io(io::Error::other(other)),
                },
                None => HandshakeError::Io(io::Error::other("TLS input refused")),
            });
        }
    }
    // TLS 1.2's last flight (the server's Finished) must go now: the client waits for
    // it. What TLS 1.3 leaves queued is only the session ticket, which the client does
    // not wait for: when the client's next command is already here (it usually comes
    // with its Finished), the ticket goes with our reply to it, in the same write and
    // segment, instead of costing a write and a wake-up of the client of its own; when
    // it is not, the ticket goes now, as soon as the handshake is over (a client that
    // reads it and leaves, `openssl s_client -sess_out`, still gets it).
    let client_spoke = !pending.is_empty()
        || conn.socket_readable()
        || tls
            .process_new_packets()
            .is_ok_and(|io| io.plaintext_bytes_to_read() > 0);
    if tls.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) || !client_spoke {
        flush_tls(conn, &mut tls).map_err(HandshakeError::Io)?;
    }
    let info = TlsInfo::of(&tls);
    conn.set_tls(TlsStream {
        conn: tls,
        pending,
        raw,
    });
    Ok(info)
}

/// Hands buffered ciphertext to rustls and processes it.
fn feed(tls: &mut ServerConnection, pending: &mut Vec<u8>) -> io::Result<()> {
    let mut slice: &[u8] = pending;
    let before = slice.len();
    let result = tls.read_tls(&mut slice);
    let used = before - slice.len();
    pending.drain(..used);
    result?;
    tls.process_new_packets()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(())
}

/// Writes whatever rustls has queued for the socket.
fn flush_tls(conn: &mut Conn, tls: &mut ServerConnection) -> io::Result<()> {
    while tls.wants_write() {
        let mut out = Vec::new();
        tls.write_tls(&mut out)?;
        conn.write_raw(&out)?;
    }
    Ok(())
}

impl TlsStream {
    /// Reads plaintext, reading and decrypting ciphertext as needed until `deadline`.
    pub(crate) fn read(
        &mut self,
        conn: &mut Conn,
        buf: &mut [u8],
        deadline: Instant,
    ) -> io::Result<ReadOutcome> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(0) => return Ok(ReadOutcome::Eof),
                Ok(n) => return Ok(ReadOutcome::Data(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(ReadOutcome::Eof),
                Err(e) => return Err(e),
            }
            if self.pending.is_empty() {
                // Never wait for the client while holding output for it (a session
                // ticket, a key update): it may be waiting for that first.
                if self.conn.wants_write() && !conn.socket_readable() {
                    flush_tls(conn, &mut self.conn)?;
                }
                match conn.read_raw(&mut self.raw, deadline)? {
                    ReadOutcome::Data(n) => self.pending.extend_from_slice(&self.raw[..n]),
                    other => return Ok(other),
                }
            }
            // What the input made rustls queue (a key update) goes with our next
            // reply, or before we wait for more input; an alert about bad input goes
            // now, before the error ends the session.
            if let Err(e) = feed(&mut self.conn, &mut self.pending) {
                let _ = flush_tls(conn, &mut self.conn);
                return Err(e);
            }
        }
    }

    /// Encrypts and writes all of `bytes`.
    pub(crate) fn write_all(&mut self, conn: &mut Conn, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let n = self.conn.writer().write(bytes)?;
            bytes = &bytes[n..];
            flush_tls(conn, &mut self.conn)?;
        }
        Ok(())
    }

    /// Encrypts `bytes`, then the close_notify alert, and writes them together.
    pub(crate) fn write_all_and_close(
        &mut self,
        conn: &mut Conn,
        mut bytes: &[u8],
    ) -> io::Result<()> {
        while !bytes.is_empty() {
            let n = self.conn.writer().write(bytes)?;
            bytes = &bytes[n..];
            if !bytes.is_empty() {
                // rustls' buffer is full: send what it holds and go on.
                flush_tls(conn, &mut self.conn)?;
            }
        }
        self.conn.send_close_notify();
        flush_tls(conn, &mut self.conn)
    }

    /// True when decrypted or undecrypted input is waiting.
    pub(crate) fn has_buffered_input(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Sends close_notify (best effort; the socket is closed next anyway).
    pub(crate) fn close(&mut self, conn: &mut Conn) {
        self.conn.send_close_notify();
        let _ = flush_tls(conn, &mut self.conn);
    }
}

#[cfg(test)]
mod tests;
