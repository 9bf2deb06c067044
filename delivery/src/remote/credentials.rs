//! Logging in to a smarthost or route (`remote.credentials_file`): `host user password`
//! lines (the password is the rest of the line; `#` comments), looked up by the host
//! as written in `remote.smarthost` / `remote.routes` (or the MX name), compared
//! without regard to case.
//!
//! AUTH PLAIN (RFC 4954, 4616) is sent only over TLS, and only when the server offers
//! it: credentials for a host whose session is not encrypted, or that does not offer
//! AUTH PLAIN, make the attempt fail (the mail defers) rather than send mail
//! unauthenticated or a password in clear. A `535` defers too: a wrong password is
//! the operator's to fix, not the sender's to bounce.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

/// A user and password for one host.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login").field("user", &self.user).finish()
    }
}

/// Why `remote.credentials_file` cannot be used (every delivery that would log in
/// defers with this text until the operator fixes the file).
#[derive(Debug)]
pub enum CredentialsError {
    /// The file could not be read.
    Read(std::path::PathBuf, std::io::Error),
    /// Line `line` (1-based) is not `host user password`.
    Syntax { line: usize },
    /// A syntax error in the file at `path`.
    InFile(std::path::PathBuf, Box<CredentialsError>),
}

impl fmt::Display for CredentialsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialsError::Read(p, e) => write!(f, "{}: {e}", p.display()),
            CredentialsError::Syntax { line } => {
                write!(f, "line {line}: expected `host user password`")
            }
            CredentialsError::InFile(p, e) => write!(f, "{}: {e}", p.display()),
        }
    }
}

impl std::error::Error for CredentialsError {}

/// The credentials file: host (lower case) -> login.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    by_host: HashMap<String, Login>,
}

impl Credentials {
    /// Parses the file's text; errors name the line.
    pub fn parse(text: &str) -> Result<Credentials, CredentialsError> {
        let mut by_host = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut it = line.splitn(3, char::is_whitespace);
            match (it.next(), it.next(), it.next().map(str::trim)) {
                (Some(host), Some(user), Some(password)) if !password.is_empty() => {
                    by_host.insert(
                        host.to_ascii_lowercase(),
                        Login {
                            user: user.to_string(),
                            password: password.to_string(),
                        },
                    );
                }
                _ => return Err(CredentialsError::Syntax { line: i + 1 }),
            }
        }
        Ok(Credentials { by_host })
    }

    /// Reads `path`.
    pub fn load(path: &Path) -> Result<Credentials, CredentialsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CredentialsError::Read(path.to_path_buf(), e))?;
        Credentials::parse(&text)
            .map_err(|e| CredentialsError::InFile(path.to_path_buf(), Box::new(e)))
    }

    /// The login for `host`, if any.
    pub fn get(&self, host: &str) -> Option<&Login> {
        self.by_host
            .get(&host.trim_end_matches('.').to_ascii_lowercase())
    }
}

/// The AUTH PLAIN initial response for `login`.
pub fn plain_response(login: &Login) -> String {
    let mut raw = Vec::with_capacity(login.user.len() * 2 + login.password.len() + 2);
    raw.push(0);
    raw.extend_from_slice(login.user.as_bytes());
    raw.push(0);
    raw.extend_from_slice(login.password.as_bytes());
    base64(&raw)
}

fn base64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn lines_lookup_and_plain() {
        let c =
            Credentials::parse("# relays\nsmtp.Example.net alice s3cret pass\n\n127.0.0.1 bob x\n")
                .unwrap();
        let l = c.get("SMTP.example.net.").unwrap();
        assert_eq!(
            (l.user.as_str(), l.password.as_str()),
            ("alice", "s3cret pass")
        );
        assert!(c.get("other").is_none());
        assert_eq!(plain_response(c.get("127.0.0.1").unwrap()), "AGJvYgB4");
        assert!(!format!("{l:?}").contains("s3cret"));
        assert_eq!(
            Credentials::parse("host user\n").unwrap_err().to_string(),
            "line 1: expected `host user password`"
        );
    }
}
