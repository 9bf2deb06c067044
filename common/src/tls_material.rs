//! TLS certificates and keys: loading and checking them, and the bundle `sloopd` hands
//! to the smtpd workers.
//!
//! `sloopd` (root) reads every configured pair ([`load_pair`]) at start and on reload:
//! the PEM chain must hold at least one certificate, the key file exactly one private
//! key of a type rustls can sign with (RSA, ECDSA, Ed25519), the key must belong to the
//! first certificate, and that certificate must be valid now. Each failure is an error
//! naming the file. The workers run unprivileged and never open the key file: `sloopd`
//! writes the checked PEM text plus the session-ticket keys into a [`Bundle`] in a sealed
//! memory file whose descriptor only the workers inherit (docs/tls.md), and each worker
//! reads it once at start and closes it.

use crate::config::CertKeyFiles;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a certificate or key file is unusable.
#[derive(Debug)]
pub enum TlsFileError {
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    NoCertificate {
        file: PathBuf,
    },
    BadCertificate {
        file: PathBuf,
        why: String,
    },
    NoKey {
        file: PathBuf,
    },
    BadKey {
        file: PathBuf,
        why: String,
    },
    Mismatch {
        cert_file: PathBuf,
        key_file: PathBuf,
    },
    Expired {
        file: PathBuf,
        not_after: String,
    },
    NotYetValid {
        file: PathBuf,
        not_before: String,
    },
}

impl fmt::Display for TlsFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsFileError::Read { file, source } => {
                write!(f, "{}: cannot read: {source}", file.display())
            }
            TlsFileError::NoCertificate { file } => write!(
                f,
                "{}: no PEM certificate (-----BEGIN CERTIFICATE-----) found",
                file.display()
            ),
            TlsFileError::BadCertificate { file, why } => {
                write!(f, "{}: unusable certificate: {why}", file.display())
            }
            TlsFileError::NoKey { file } => write!(
                f,
                "{}: no PEM private key (PKCS#8, RSA or EC) found",
                file.display()
            ),
            TlsFileError::BadKey { file, why } => {
                write!(f, "{}: unusable private key: {why}", file.display())
            }
            TlsFileError::Mismatch {
                cert_file,
                key_file,
            } => write!(
                f,
                "{}: private key does not match the certificate in {}",
                key_file.display(),
                cert_file.display()
            ),
            TlsFileError::Expired { file, not_after } => write!(
                f,
                "{}: certificate expired (not after {not_after})",
                file.display()
            ),
            TlsFileError::NotYetValid { file, not_before } => write!(
                f,
                "{}: certificate not valid yet (not before {not_before})",
                file.display()
            ),
        }
    }
}

impl std::error::Error for TlsFileError {}

/// A checked certificate chain and key, as PEM text.
#[derive(Clone)]
pub struct CertPair {
    pub files: CertKeyFiles,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// `RSA`, `ECDSA` or `ED25519`.
    pub algorithm: String,
    /// End of the server certificate's validity (Unix time).
    pub not_after: i64,
    /// Things the operator should hear about (a key readable by others).
    pub warnings: Vec<String>,
}

impl fmt::Debug for CertPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("CertPair")
            .field("files", &self.files)
            .field("algorithm", &self.algorithm)
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// Reads and checks one pair at Unix time `now`.
pub fn load_pair(files: &CertKeyFiles, now: i64) -> Result<CertPair, TlsFileError> {
    let cert_pem = read(&files.cert_file)?;
    let key_pem = read(&files.key_file)?;
    let ck = certified_key(&cert_pem, &key_pem, &files.cert_file, &files.key_file)?;
    let leaf = ck.cert.first().ok_or_else(|| TlsFileError::NoCertificate {
        file: files.cert_file.clone(),
    })?;
    let (not_before, not_after) =
        validity(leaf.as_ref()).map_err(|why| TlsFileError::BadCertificate {
            file: files.cert_file.clone(),
            why: why.to_string(),
        })?;
    if now > not_after {
        return Err(TlsFileError::Expired {
            file: files.cert_file.clone(),
            not_after: show_time(not_after),
        });
    }
    if now < not_before {
        return Err(TlsFileError::NotYetValid {
            file: files.cert_file.clone(),
            not_before: show_time(not_before),
        });
    }
    let mut warnings = Vec::new();
    if let Ok(meta) = std::fs::metadata(&files.key_file) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            warnings.push(format!(
                "{}: private key is readable or writable by group or others (mode {:o}); \
                 make it 0600 root",
                files.key_file.display(),
                meta.permissions().mode() & 0o7777
            ));
        }
    }
    Ok(CertPair {
        files: files.clone(),
        algorithm: format!("{:?}", ck.key.algorithm()).to_ascii_uppercase(),
        cert_pem,
        key_pem,
        not_after,
        warnings,
    })
}

/// Every configured pair, checked; empty when TLS is not configured.
pub fn load_configured(cfg: &crate::Config) -> Result<Vec<CertPair>, TlsFileError> {
    let now = unix_now();
    cfg.tls.pairs.iter().map(|p| load_pair(p, now)).collect()
}

/// Builds the signing identity from PEM text (the files are named in errors).
pub fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_file: &Path,
    key_file: &Path,
) -> Result<CertifiedKey, TlsFileError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsFileError::BadCertificate {
            file: cert_file.to_path_buf(),
            why: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsFileError::NoCertificate {
            file: cert_file.to_path_buf(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsFileError::NoKey {
            file: key_file.to_path_buf(),
        },
        other => TlsFileError::BadKey {
            file: key_file.to_path_buf(),
            why: other.to_string(),
        },
    })?;
    let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key).map_err(|e| {
        TlsFileError::BadKey {
            file: key_file.to_path_buf(),
            why: e.to_string(),
        }
    })?;
    let ck = CertifiedKey::new(chain, signer);
    match ck.keys_match() {
        Ok(()) => Ok(ck),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsFileError::Mismatch {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
        }),
        Err(e) => Err(TlsFileError::BadCertificate {
            file: cert_file.to_path_buf(),
            why: e.to_string(),
        }),
    }
}

fn read(file: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(file).map_err(|source| TlsFileError::Read {
        file: file.to_path_buf(),
        source,
    })
}

/// Current Unix time.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn show_time(t: i64) -> String {
    crate::logging::rfc5322_date(t.max(0) as u64)
}

/// The validity period (notBefore, notAfter) of a DER X.509 certificate, in Unix time.
pub fn validity(der: &[u8]) -> Result<(i64, i64), &'static str> {
    let (cert, _) = der_item(der, 0x30)?;
    let (mut tbs, _) = der_item(cert, 0x30)?;
    // [0] EXPLICIT version, optional.
    if tbs.first() == Some(&0xa0) {
        tbs = der_skip(tbs)?;
    }
    tbs = der_skip(tbs)?; // serialNumber
    tbs = der_skip(tbs)?; // signature AlgorithmIdentifier
    tbs = der_skip(tbs)?; // issuer
    let (val, _) = der_item(tbs, 0x30)?;
    let (nb_tag, nb, rest) = der_any(val)?;
    let (na_tag, na, _) = der_any(rest)?;
    Ok((der_time(nb_tag, nb)?, der_time(na_tag, na)?))
}

/// One DER item with the expected tag: (contents, rest).
fn der_item(b: &[u8], tag: u8) -> Result<(&[u8], &[u8]), &'static str> {
    let (t, contents, rest) = der_any(b)?;
    if t != tag {
        return Err("unexpected DER tag");
    }
    Ok((contents, rest))
}

fn der_skip(b: &[u8]) -> Result<&[u8], &'static str> {
    der_any(b).map(|(_, _, rest)| rest)
}

/// One DER item: (tag, contents, rest). Only short-form tags (X.509 needs no others).
fn der_any(b: &[u8]) -> Result<(u8, &[u8], &[u8]), &'static str> {
    const BAD: &str = "truncated or malformed DER";
    let (&tag, b) = b.split_first().ok_or(BAD)?;
    let (&first, mut b) = b.split_first().ok_or(BAD)?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || b.len() < n {
            return Err(BAD);
        }
        let mut len = 0usize;
        for &x in &b[..n] {
            len = (len << 8) | x as usize;
        }
        b = &b[n..];
        len
    };
    if b.len() < len {
        return Err(BAD);
    }
    Ok((tag, &b[..len], &b[len..]))
}

/// UTCTime (0x17, `YYMMDDHHMMSSZ`) or GeneralizedTime (0x18, `YYYYMMDDHHMMSSZ`).
fn der_time(tag: u8, v: &[u8]) -> Result<i64, &'static str> {
    const BAD: &str = "malformed certificate validity time";
    let s = std::str::from_utf8(v).map_err(|_| BAD)?;
    let s = s.strip_suffix('Z').ok_or(BAD)?;
    let (year, rest) = match (tag, s.len()) {
        (0x17, 12) => {
            let yy: i64 = s[..2].parse().map_err(|_| BAD)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &s[2..])
        }
        (0x18, 14) => (s[..4].parse().map_err(|_| BAD)?, &s[4..]),
        _ => return Err(BAD),
    };
    if !rest.bytes().all(|c| c.is_ascii_digit()) {
        return Err(BAD);
    }
    let n = |i: usize| -> i64 { rest[i..i + 2].parse().unwrap_or(0) };
    let (mo, d, h, mi, se) = (n(0), n(2), n(4), n(6), n(8));
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return Err(BAD);
    }
    Ok(days_from_civil(year, mo, d) * 86400 + h * 3600 + mi * 60 + se)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// One session-ticket key: an identifier carried in each ticket and a 256-bit key.
#[derive(Clone, PartialEq, Eq)]
pub struct TicketKey {
    pub id: [u8; 8],
    pub key: [u8; 32],
    /// When `sloopd` made it (Unix time).
    pub created: i64,
}

impl fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketKey")
            .field("created", &self.created)
            .finish()
    }
}

impl TicketKey {
    /// A fresh random key.
    pub fn generate() -> Result<TicketKey, BundleError> {
        use ring::rand::SecureRandom;
        let rng = ring::rand::SystemRandom::new();
        let mut id = [0u8; 8];
        let mut key = [0u8; 32];
        rng.fill(&mut id).map_err(|_| BundleError::Random)?;
        rng.fill(&mut key).map_err(|_| BundleError::Random)?;
        Ok(TicketKey {
            id,
            key,
            created: unix_now(),
        })
    }
}

/// What a worker needs for TLS: the checked pairs and the ticket keys.
#[derive(Debug, Clone, Default)]
pub struct Bundle {
    pub pairs: Vec<CertPair>,
    /// The key new tickets are sealed with; `None`: no tickets.
    pub ticket_current: Option<TicketKey>,
    /// The key before it, still accepted.
    pub ticket_previous: Option<TicketKey>,
    /// Ticket lifetime hint for clients, in seconds.
    pub ticket_lifetime: u32,
}

/// Why a bundle could not be made or read.
#[derive(Debug)]
pub enum BundleError {
    Random,
    Malformed(&'static str),
    Io(std::io::Error),
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BundleError::Random => f.write_str("the system random generator failed"),
            BundleError::Malformed(why) => write!(f, "malformed TLS bundle: {why}"),
            BundleError::Io(e) => write!(f, "TLS bundle: {e}"),
        }
    }
}

impl std::error::Error for BundleError {}

const MAGIC: &[u8] = b"SLOOP-TLS-1\n";

impl Bundle {
    /// The wire form: the magic line, then records of tag, 4-octet length, octets.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        let mut rec = |tag: u8, data: &[u8]| {
            out.push(tag);
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            out.extend_from_slice(data);
        };
        for p in &self.pairs {
            rec(b'F', p.files.cert_file.to_string_lossy().as_bytes());
            rec(b'G', p.files.key_file.to_string_lossy().as_bytes());
            rec(b'C', &p.cert_pem);
            rec(b'K', &p.key_pem);
        }
        for (tag, k) in [(b'T', &self.ticket_current), (b'P', &self.ticket_previous)] {
            if let Some(k) = k {
                let mut v = k.id.to_vec();
                v.extend_from_slice(&k.key);
                v.extend_from_slice(&k.created.to_be_bytes());
                rec(tag, &v);
            }
        }
        rec(b'L', &self.ticket_lifetime.to_be_bytes());
        out
    }

    /// Parses [`Bundle::encode`]'s output (pairs are not re-checked here).
    pub fn decode(mut b: &[u8]) -> Result<Bundle, BundleError> {
        b = b
            .strip_prefix(MAGIC)
            .ok_or(BundleError::Malformed("bad magic"))?;
        let mut out = Bundle::default();
        let mut files: (PathBuf, PathBuf) = Default::default();
        let mut cert: Option<Vec<u8>> = None;
        while !b.is_empty() {
            if b.len() < 5 {
                return Err(BundleError::Malformed("truncated record header"));
            }
            let tag = b[0];
            let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
            let data = b
                .get(5..5 + len)
                .ok_or(BundleError::Malformed("truncated record"))?;
            b = &b[5 + len..];
            match tag {
                b'F' => files.0 = PathBuf::from(String::from_utf8_lossy(data).into_owned()),
                b'G' => files.1 = PathBuf::from(String::from_utf8_lossy(data).into_owned()),
                b'C' => cert = Some(data.to_vec()),
                b'K' => {
                    let cert_pem = cert
                        .take()
                        .ok_or(BundleError::Malformed("key without certificate"))?;
                    out.pairs.push(CertPair {
                        files: CertKeyFiles {
                            cert_file: std::mem::take(&mut files.0),
                            key_file: std::mem::take(&mut files.1),
                        },
                        cert_pem,
                        key_pem: data.to_vec(),
                        algorithm: String::new(),
                        not_after: 0,
                        warnings: Vec::new(),
                    });
                }
                b'T' | b'P' => {
                    if data.len() != 48 {
                        return Err(BundleError::Malformed("ticket key length"));
                    }
                    let mut id = [0u8; 8];
                    let mut key = [0u8; 32];
                    let mut created = [0u8; 8];
                    id.copy_from_slice(&data[..8]);
                    key.copy_from_slice(&data[8..40]);
                    created.copy_from_slice(&data[40..]);
                    let k = TicketKey {
                        id,
                        key,
                        created: i64::from_be_bytes(created),
                    };
                    if tag == b'T' {
                        out.ticket_current = Some(k);
                    } else {
                        out.ticket_previous = Some(k);
                    }
                }
                b'L' => {
                    let v: [u8; 4] = data
                        .try_into()
                        .map_err(|_| BundleError::Malformed("lifetime length"))?;
                    out.ticket_lifetime = u32::from_be_bytes(v);
                }
                _ => return Err(BundleError::Malformed("unknown record")),
            }
        }
        Ok(out)
    }

    /// The signing identities of every pair, checked again (the bundle names the files).
    pub fn certified_keys(&self) -> Result<Vec<Arc<CertifiedKey>>, TlsFileError> {
        self.pairs
            .iter()
            .map(|p| {
                certified_key(
                    &p.cert_pem,
                    &p.key_pem,
                    &p.files.cert_file,
                    &p.files.key_file,
                )
                .map(Arc::new)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
