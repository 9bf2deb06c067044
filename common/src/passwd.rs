//! The AUTH password file (`auth.password_file`): `user:hash` lines, read by the smtpd
//! workers when a client authenticates and written by `sloop passwd`.
//!
//! New entries are argon2id (PHC string `$argon2id$...`, the argon2 crate's default
//! parameters). bcrypt (`$2b$`, `$2y$`, `$2a$`) and SHA-512-crypt (`$6$`) hashes are
//! verified too, so a Dovecot or `/etc/shadow` style file can be migrated as it is.
//! Blank lines and lines starting with `#` are ignored; user names are compared
//! without regard to case. A user that is not in the file is checked against a fixed
//! argon2id hash anyway, so an unknown user and a wrong password take the same time.
//!
//! Writing ([`write_atomically`]) goes to a temporary file in the same directory,
//! created exclusively with the final mode, synced, then renamed over the file, and the
//! directory synced: a crash leaves the old file or the new one, never half of one.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// One line of the file.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    pub user: String,
    pub hash: String,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("user", &self.user)
            .field("scheme", &scheme(&self.hash))
            .finish()
    }
}

/// What went wrong with the password file.
#[derive(Debug)]
pub enum PasswdError {
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    Syntax {
        file: PathBuf,
        line: usize,
        why: String,
    },
    Hash(String),
    BadUser(String),
}

impl fmt::Display for PasswdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswdError::Io { file, source } => write!(f, "{}: {source}", file.display()),
            PasswdError::Syntax { file, line, why } => {
                write!(f, "{}:{line}: {why}", file.display())
            }
            PasswdError::Hash(why) => write!(f, "password hashing failed: {why}"),
            PasswdError::BadUser(u) => write!(
                f,
                "bad user name {u:?}: 1 to 255 characters, no ':', spaces or control characters"
            ),
        }
    }
}

impl std::error::Error for PasswdError {}

/// The hash scheme of a stored hash, for listings and logs.
pub fn scheme(hash: &str) -> &'static str {
    if hash.starts_with("$argon2id$") {
        "argon2id"
    } else if hash.starts_with("$argon2") {
        "argon2"
    } else if hash.starts_with("$2b$") || hash.starts_with("$2y$") || hash.starts_with("$2a$") {
        "bcrypt"
    } else if hash.starts_with("$6$") {
        "sha512-crypt"
    } else {
        "unknown"
    }
}

/// True for a name `sloop passwd` accepts and the file can hold.
pub fn valid_user(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= 255
        && !user
            .chars()
            .any(|c| c == ':' || c.is_whitespace() || c.is_control())
}

/// Parses the file's text.
pub fn parse(file: &Path, text: &str) -> Result<Vec<Entry>, PasswdError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let syntax = |why: &str| PasswdError::Syntax {
            file: file.to_path_buf(),
            line: i + 1,
            why: why.to_string(),
        };
        let (user, hash) = line
            .split_once(':')
            .ok_or_else(|| syntax("expected user:hash"))?;
        if !valid_user(user) {
            return Err(syntax("bad user name"));
        }
        // Dovecot passwd-file lines may carry more fields after the hash.
        let hash = hash.split(':').next().unwrap_or("");
        let hash = hash
            .strip_prefix("{ARGON2ID}")
            .or_else(|| hash.strip_prefix("{BLF-CRYPT}"))
            .or_else(|| hash.strip_prefix("{SHA512-CRYPT}"))
            .unwrap_or(hash);
        if scheme(hash) == "unknown" {
            return Err(syntax(
                "unsupported hash (argon2id, bcrypt or SHA-512-crypt expected)",
            ));
        }
        out.push(Entry {
            user: user.to_string(),
            hash: hash.to_string(),
        });
    }
    Ok(out)
}

/// Reads and parses the file.
pub fn load(file: &Path) -> Result<Vec<Entry>, PasswdError> {
    let text = std::fs::read_to_string(file).map_err(|source| PasswdError::Io {
        file: file.to_path_buf(),
        source,
    })?;
    parse(file, &text)
}

/// A hash for a new entry: argon2id with a random salt.
pub fn hash_new(password: &[u8]) -> Result<String, PasswdError> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    use ring::rand::SecureRandom;
    let mut salt = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| PasswdError::Hash("the system random generator failed".into()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswdError::Hash(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswdError::Hash(e.to_string()))
}

/// An argon2id hash made with the default parameters, checked for users not in the
/// file so that they cost the same time as a wrong password.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2xvb3BkdW1teXNhbHQ$6ut4AqTUlHDZK8B0c8MQZ8cYkx+8fWgr7bgI0t5K6nI";

/// True when `password` matches `hash` (false for a malformed hash).
pub fn verify(hash: &str, password: &[u8]) -> bool {
    match scheme(hash) {
        "argon2id" | "argon2" => {
            use argon2::password_hash::{PasswordHash, PasswordVerifier};
            match PasswordHash::new(hash) {
                Ok(parsed) => argon2::Argon2::default()
                    .verify_password(password, &parsed)
                    .is_ok(),
                Err(_) => false,
            }
        }
        "bcrypt" => bcrypt::verify(password, hash).unwrap_or(false),
        "sha512-crypt" => match std::str::from_utf8(password) {
            Ok(p) => sha_crypt::sha512_check(p, hash).is_ok(),
            Err(_) => false,
        },
        _ => false,
    }
}

/// Checks `user`'s password against the entries; an unknown user is checked against
/// the dummy hash and fails.
pub fn check(entries: &[Entry], user: &str, password: &[u8]) -> bool {
    match entries.iter().find(|e| e.user.eq_ignore_ascii_case(user)) {
        Some(e) => verify(&e.hash, password),
        None => {
            let _ = verify(DUMMY_HASH, password);
            false
        }
    }
}

/// Renders entries as the file's text.
pub fn render(entries: &[Entry]) -> String {
    let mut out = String::from("# Sloop AUTH users: user:hash (managed with `sloop passwd`)\n");
    for e in entries {
        out.push_str(&format!("{}:{}\n", e.user, e.hash));
    }
    out
}

/// Replaces `file` with `text` atomically, with `mode` and, when given, the owner.
pub fn write_atomically(
    file: &Path,
    text: &str,
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<(), PasswdError> {
    let io = |source| PasswdError::Io {
        file: file.to_path_buf(),
        source,
    };
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "passwd".into());
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(io)?;
    let result = (|| {
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        }
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, file)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn argon2id_round_trip_and_the_dummy_hash_is_well_formed() {
        let h = hash_new(b"s3cret").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify(&h, b"s3cret"));
        assert!(!verify(&h, b"s3cres"));
        use argon2::password_hash::PasswordHash;
        let dummy = PasswordHash::new(DUMMY_HASH).unwrap();
        let real = PasswordHash::new(&h).unwrap();
        assert_eq!(dummy.params, real.params, "same cost as a real entry");
    }

    #[test]
    fn migrated_hashes_verify() {
        let b = bcrypt::hash("pw", 4).unwrap();
        assert!(verify(&b, b"pw") && !verify(&b, b"px"));
        let params = sha_crypt::Sha512Params::new(5000).unwrap();
        let s = sha_crypt::sha512_simple("pw", &params).unwrap();
        assert!(s.starts_with("$6$"));
        assert!(verify(&s, b"pw") && !verify(&s, b"px"));
        assert!(!verify("$6$broken", b"pw"));
        assert!(!verify("plain", b"plain"));
    }

    #[test]
    fn the_file_parses_and_unknown_users_fail() {
        let h = hash_new(b"pw").unwrap();
        let text = format!(
            "# c\n\nalice:{h}\nbob@example.com:{{BLF-CRYPT}}{}:1000:1000::\n",
            bcrypt::hash("x", 4).unwrap()
        );
        let entries = parse(Path::new("f"), &text).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].user, "bob@example.com");
        assert_eq!(scheme(&entries[1].hash), "bcrypt");
        assert!(check(&entries, "ALICE", b"pw"));
        assert!(!check(&entries, "alice", b"px"));
        assert!(!check(&entries, "carol", b"pw"));
        let e = parse(Path::new("f"), "alice\n").unwrap_err();
        assert_eq!(e.to_string(), "f:1: expected user:hash");
        assert!(parse(Path::new("f"), "alice:{PLAIN}pw\n").is_err());
        assert!(!format!("{:?}", entries[0]).contains("argon2id$"));
    }

    #[test]
    fn atomic_write_sets_the_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("sloop-passwd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("users");
        write_atomically(&f, "a:b\n", 0o640, None).unwrap();
        write_atomically(&f, "c:d\n", 0o640, None).unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "c:d\n");
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temp file left"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
