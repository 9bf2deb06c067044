//! The TLS material `sloopd` hands its smtpd workers: the checked certificate chains
//! and private keys, and the session-ticket keys it generates and rotates.
//!
//! `sloopd` runs as root and reads the key files itself (they stay mode 0600 root);
//! the workers run as `server.user` and never open them. At start and on each reload
//! [`TlsHandoff::load`] checks every configured pair (`sloop_common::tls_material`):
//! an unreadable file, a key that does not match its certificate or an expired
//! certificate stops the start (exit 78) or rejects the reload (the running material
//! stays). The checked material and the ticket keys are written into a memory file
//! (`memfd_create`), sealed against any change, whose descriptor is close-on-exec
//! except while an smtpd worker is spawned; its number reaches the worker in
//! `SLOOP_TLS_FD`. Nothing is written to disk and nothing secret is in the environment.
//!
//! Ticket keys: one current key seals new tickets, the previous one still opens old
//! ones, so a client resumes on any worker of the pool. Every `tls.ticket_rotation`
//! a new key is made, the current one becomes the previous, and the workers are
//! retired (each exits after its session; replacements read the new memory file).

use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use sloop_common::tls_material::{self, Bundle, BundleError, CertPair, TicketKey, TlsFileError};
use sloop_common::Config;
use std::fmt;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// A certificate this close to its end is warned about at each load.
const EXPIRY_WARNING_SECS: i64 = 14 * 86_400;

/// Why the TLS material could not be prepared.
#[derive(Debug)]
pub enum HandoffError {
    File(TlsFileError),
    Bundle(BundleError),
    Memfd(nix::Error),
}

impl fmt::Display for HandoffError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandoffError::File(e) => write!(f, "TLS: {e}"),
            HandoffError::Bundle(e) => write!(f, "TLS: {e}"),
            HandoffError::Memfd(e) => {
                write!(f, "TLS: cannot create the key memory file: {}", e.desc())
            }
        }
    }
}

impl std::error::Error for HandoffError {}

/// The material and the sealed memory file carrying it.
#[derive(Debug, Default)]
pub struct TlsHandoff {
    pairs: Vec<CertPair>,
    tickets: bool,
    rotation: Duration,
    current: Option<TicketKey>,
    previous: Option<TicketKey>,
    rotated_at: Option<Instant>,
    fd: Option<OwnedFd>,
}

impl TlsHandoff {
    /// Checks the configured pairs and makes fresh ticket keys; `Ok` with no
    /// descriptor when TLS is not configured.
    pub fn load(cfg: &Config, now: Instant) -> Result<TlsHandoff, HandoffError> {
        let mut h = TlsHandoff::default();
        h.apply(cfg, now)?;
        Ok(h)
    }

    /// On reload: the new config's pairs, keeping the ticket keys (so sessions from
    /// before the reload still resume). Nothing changes on error.
    pub fn reload(&mut self, cfg: &Config, now: Instant) -> Result<(), HandoffError> {
        let mut next = TlsHandoff {
            current: self.current.clone(),
            previous: self.previous.clone(),
            rotated_at: self.rotated_at,
            ..TlsHandoff::default()
        };
        next.apply(cfg, now)?;
        *self = next;
        Ok(())
    }

    fn apply(&mut self, cfg: &Config, now: Instant) -> Result<(), HandoffError> {
        let pairs = tls_material::load_configured(cfg).map_err(HandoffError::File)?;
        for p in &pairs {
            for w in &p.warnings {
                log::warn!("{w}");
            }
            log::info!(
                "TLS certificate {} ({}) valid until {}",
                p.files.cert_file.display(),
                p.algorithm,
                sloop_common::logging::rfc5322_date(p.not_after.max(0) as u64)
            );
            let left = p.not_after - tls_material::unix_now();
            if left < EXPIRY_WARNING_SECS {
                log::warn!(
                    "TLS certificate {} expires in {} day(s): renew it and reload",
                    p.files.cert_file.display(),
                    left.max(0) / 86_400
                );
            }
        }
        self.pairs = pairs;
        self.tickets = cfg.tls.session_tickets;
        self.rotation = cfg.tls.ticket_rotation;
        if self.tickets && self.current.is_none() {
            self.current = Some(TicketKey::generate().map_err(HandoffError::Bundle)?);
            self.rotated_at = Some(now);
        }
        self.seal()
    }

    /// Writes the bundle into a new sealed memory file (or none without TLS).
    fn seal(&mut self) -> Result<(), HandoffError> {
        if self.pairs.is_empty() {
            self.fd = None;
            return Ok(());
        }
        let bundle = Bundle {
            pairs: self.pairs.clone(),
            ticket_current: self.current.clone().filter(|_| self.tickets),
            ticket_previous: self.previous.clone().filter(|_| self.tickets),
            ticket_lifetime: lifetime_hint(self.rotation),
        };
        self.fd = Some(sealed_memfd(&bundle.encode())?);
        Ok(())
    }

    /// The descriptor workers inherit, if TLS is configured.
    pub fn fd(&self) -> Option<RawFd> {
        self.fd.as_ref().map(|f| f.as_raw_fd())
    }

    /// When the next ticket rotation is due.
    pub fn next_rotation(&self) -> Option<Instant> {
        if self.fd.is_none() || !self.tickets {
            return None;
        }
        self.rotated_at.map(|t| t + self.rotation)
    }

    /// Rotates the ticket keys when due; true when it did (the caller retires the
    /// workers so that replacements read the new keys).
    pub fn rotate_if_due(&mut self, now: Instant) -> bool {
        match self.next_rotation() {
            Some(due) if now >= due => {}
            _ => return false,
        }
        let fresh = match TicketKey::generate() {
            Ok(k) => k,
            Err(e) => {
                log::error!("TLS: ticket key rotation failed: {e}; keeping the current key");
                self.rotated_at = Some(now);
                return false;
            }
        };
        let (old_current, old_previous) = (self.current.take(), self.previous.take());
        self.previous = old_current.clone();
        self.current = Some(fresh);
        self.rotated_at = Some(now);
        match self.seal() {
            Ok(()) => {
                log::info!("TLS: session ticket key rotated");
                true
            }
            Err(e) => {
                log::error!("{e}; keeping the current ticket key");
                self.current = old_current;
                self.previous = old_previous;
                false
            }
        }
    }
}

/// What clients are told a ticket is good for: until the key is dropped, which is
/// between one and two rotation periods after it was made; say one.
fn lifetime_hint(rotation: Duration) -> u32 {
    rotation.as_secs().min(u64::from(u32::MAX)) as u32
}

/// A close-on-exec memory file holding `data`, sealed against writes and resizing.
fn sealed_memfd(data: &[u8]) -> Result<OwnedFd, HandoffError> {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    let fd = memfd_create(
        c"sloop-tls",
        MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
    )
    .map_err(HandoffError::Memfd)?;
    let mut f = std::fs::File::from(fd);
    f.write_all(data)
        .map_err(|e| HandoffError::Bundle(BundleError::Io(e)))?;
    let seals = SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_WRITE
        | SealFlag::F_SEAL_SEAL;
    fcntl(f.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals)).map_err(HandoffError::Memfd)?;
    Ok(OwnedFd::from(f))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::os::unix::fs::FileExt;

    fn read_all(fd: RawFd) -> Vec<u8> {
        let f = std::fs::File::open(format!("/proc/self/fd/{fd}")).unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let n = f.read_at(&mut buf, 0).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn no_tls_configured_means_no_descriptor() {
        let cfg = Config::parse(std::path::Path::new("/nonexistent/sloop.toml"), "").unwrap();
        let h = TlsHandoff::load(&cfg, Instant::now()).unwrap();
        assert!(h.fd().is_none());
        assert!(h.next_rotation().is_none());
    }

    #[test]
    fn the_memory_file_is_sealed_and_rotation_keeps_the_previous_key() {
        let dir = std::env::temp_dir().join(format!("sloop-tlskeys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["mx.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.join("c.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("k.pem"), key.serialize_pem()).unwrap();
        let text = "[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nticket_rotation = \"1m\"\n";
        let cfg = Config::parse(&dir.join("sloop.toml"), text).unwrap();
        let t0 = Instant::now();
        let mut h = TlsHandoff::load(&cfg, t0).unwrap();
        let fd = h.fd().unwrap();
        let b1 = Bundle::decode(&read_all(fd)).unwrap();
        assert_eq!(b1.pairs.len(), 1);
        assert!(b1.ticket_current.is_some() && b1.ticket_previous.is_none());
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/fd/{fd}"))
            .unwrap();
        assert!(f.write_at(b"x", 0).is_err(), "sealed against writes");
        assert!(!h.rotate_if_due(t0 + Duration::from_secs(30)));
        assert!(h.rotate_if_due(t0 + Duration::from_secs(61)));
        let b2 = Bundle::decode(&read_all(h.fd().unwrap())).unwrap();
        assert_eq!(b2.ticket_previous, b1.ticket_current);
        assert_ne!(b2.ticket_current, b1.ticket_current);
        // A reload keeps the keys.
        h.reload(&cfg, t0 + Duration::from_secs(62)).unwrap();
        let b3 = Bundle::decode(&read_all(h.fd().unwrap())).unwrap();
        assert_eq!(b3.ticket_current, b2.ticket_current);
        // A reload onto a broken pair changes nothing.
        std::fs::write(dir.join("k.pem"), "garbage").unwrap();
        let bad = Config::parse(&dir.join("sloop.toml"), text).unwrap();
        let e = h.reload(&bad, t0).unwrap_err();
        assert!(e.to_string().contains("k.pem"), "{e}");
        assert!(h.fd().is_some());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
