//! Reading the TLS, submission and AUTH keys: the table kinds, the certificate pairs
//! and the cross-key rules that only they have.

use super::choice::Choice;
use super::params::{Kind, Param};
use super::reader::Reader;
use super::sections::{AuthBackend, CertKeyFiles, TlsConfig, TlsLevel};
use super::values;
use super::Config;
use std::collections::BTreeMap;

impl Reader<'_> {
    /// Pairs the four `tls.*_file` keys into `tls.pairs`: each file given with its
    /// partner, or neither.
    pub(super) fn tls_pairs(&mut self, tls: &mut TlsConfig) {
        let pairs = [
            (
                &tls.cert_file,
                &tls.key_file,
                "tls.cert_file",
                "tls.key_file",
            ),
            (
                &tls.ecdsa_cert_file,
                &tls.ecdsa_key_file,
                "tls.ecdsa_cert_file",
                "tls.ecdsa_key_file",
            ),
        ];
        let mut out = Vec::new();
        for (cert, key, cert_key, key_key) in pairs {
            match (cert, key) {
                (Some(cert_file), Some(key_file)) => out.push(CertKeyFiles {
                    cert_file: cert_file.clone(),
                    key_file: key_file.clone(),
                }),
                (Some(c), None) => self.issue(
                    key_key,
                    "an empty value".to_string(),
                    format!("the private key of {} (both or neither)", c.display()),
                ),
                (None, Some(k)) => self.issue(
                    cert_key,
                    "an empty value".to_string(),
                    format!(
                        "the certificate chain for {} (both or neither)",
                        k.display()
                    ),
                ),
                (None, None) => {}
            }
        }
        tls.pairs = out;
    }

    /// A `Kind::TlsPolicyTable` key: domain = level.
    pub(super) fn tls_policy(&mut self, p: &'static Param) -> BTreeMap<String, TlsLevel> {
        if p.kind != Kind::TlsPolicyTable {
            self.mismatch(p, "a table of domain = TLS level");
            return BTreeMap::new();
        }
        let key = p.key;
        let value = self.raw(p);
        let mut policy = BTreeMap::new();
        let Some(table) = value.as_table() else {
            let expected = format!("a table of domain = \"{}\"", TlsLevel::WORDS.join("|"));
            self.bad(key, &value, expected);
            return policy;
        };
        for (domain, v) in table {
            let d = values::parse_hostname(domain);
            let l = v.as_str().and_then(TlsLevel::from_word);
            match (d, l) {
                (Ok(d), Some(l)) => {
                    policy.insert(d, l);
                }
                (Err(e), _) => self.issue(key, format!("domain {domain:?}"), e.into()),
                (_, None) => self.bad(key, v, format!("one of: {}", TlsLevel::WORDS.join(", "))),
            }
        }
        policy
    }

    /// A `Kind::SendersTable` key: user = ["addr@domain", "@domain"].
    pub(super) fn senders(&mut self, p: &'static Param) -> BTreeMap<String, Vec<String>> {
        if p.kind != Kind::SendersTable {
            self.mismatch(p, "a table of user = addresses");
            return BTreeMap::new();
        }
        let key = p.key;
        let value = self.raw(p);
        let Some(table) = value.as_table() else {
            self.bad(
                key,
                &value,
                "a table of user = [\"addr@domain\", \"@domain\"]",
            );
            return BTreeMap::new();
        };
        let mut out = BTreeMap::new();
        for (user, list) in table {
            if user.is_empty() || user.contains(':') || user.chars().any(char::is_control) {
                self.issue(
                    key,
                    format!("user {user:?}"),
                    "a user name without ':' or control characters".to_string(),
                );
                continue;
            }
            let Some(items) = list.as_array() else {
                self.bad(key, list, "a list of addresses such as [\"a@example.com\"]");
                continue;
            };
            let mut addrs = Vec::new();
            for item in items {
                match item.as_str().map(values::parse_mailbox) {
                    Some(Ok(a)) => addrs.push(a.to_ascii_lowercase()),
                    Some(Err(e)) => self.bad(key, item, e),
                    None => self.bad(key, item, "a string \"addr@domain\" or \"@domain\""),
                }
            }
            out.insert(user.to_ascii_lowercase(), addrs);
        }
        out
    }

    /// Rules between the TLS, submission and AUTH keys.
    pub(super) fn tls_cross_checks(&mut self, cfg: &Config) {
        for key in ["submission.listen", "submissions.listen"] {
            let addrs = if key == "submission.listen" {
                &cfg.submission_listen
            } else {
                &cfg.submissions_listen
            };
            if addrs.is_empty() {
                continue;
            }
            if !cfg.tls.enabled() {
                self.issue(
                    key,
                    format!("{} address(es)", addrs.len()),
                    "tls.cert_file and tls.key_file set (submission needs TLS)".to_string(),
                );
            }
            if cfg.auth.backend == AuthBackend::None {
                self.issue(
                    key,
                    format!("{} address(es)", addrs.len()),
                    "auth.backend set (submission requires AUTH)".to_string(),
                );
            }
        }
        let all = cfg.all_listen();
        for (i, (a, role)) in all.iter().enumerate() {
            if let Some((_, other)) = all[..i].iter().find(|(b, _)| b == a) {
                self.issue(
                    &format!("{}.listen", role.name()),
                    a.to_string(),
                    format!("an address not also in {}.listen", other.name()),
                );
            }
        }
        match (&cfg.auth.backend, &cfg.auth.password_file) {
            (AuthBackend::File, None) => self.issue(
                "auth.password_file",
                "an empty value".to_string(),
                "a password file (auth.backend = \"file\")".to_string(),
            ),
            (AuthBackend::File, Some(p)) if self.checking_files() && !p.is_file() => self.issue(
                "auth.password_file",
                format!("{} (missing or not a regular file)", p.display()),
                "an existing file: create it with `sloop passwd add USER`".to_string(),
            ),
            _ => {}
        }
        if cfg.auth.backend == AuthBackend::Dovecot && cfg.auth.dovecot_socket.is_none() {
            self.issue(
                "auth.dovecot_socket",
                "an empty value".to_string(),
                "Dovecot's auth-client socket (auth.backend = \"dovecot\")".to_string(),
            );
        }
        if cfg.auth.offer_on_smtpd && cfg.auth.backend == AuthBackend::None {
            self.issue(
                "auth.offer_on_smtpd",
                "true".to_string(),
                "auth.backend set first".to_string(),
            );
        }
    }
}
