//! Reading the TLS, submission and AUTH keys (the table kinds and cross-key rules that
//! only they have).

use super::reader::Reader;
use super::sections::{
    AuthBackend, AuthConfig, CertKeyFiles, ProxyConfig, RemoteTlsConfig, TlsConfig, TlsLevel,
};
use super::values;
use super::Config;
use std::collections::BTreeMap;

impl Reader<'_> {
    /// `tls.*`: the configured pairs (each file given with its partner).
    pub(super) fn tls(&mut self) -> TlsConfig {
        let mut pairs = Vec::new();
        for (cert_key, key_key) in [
            ("tls.cert_file", "tls.key_file"),
            ("tls.ecdsa_cert_file", "tls.ecdsa_key_file"),
        ] {
            let cert = self.opt_path(cert_key);
            let key = self.opt_path(key_key);
            match (cert, key) {
                (Some(cert_file), Some(key_file)) => pairs.push(CertKeyFiles {
                    cert_file,
                    key_file,
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
        TlsConfig {
            pairs,
            handshake_timeout: self.duration("tls.handshake_timeout"),
            session_tickets: self.boolean("tls.session_tickets"),
            ticket_rotation: self.duration("tls.ticket_rotation"),
        }
    }

    /// `smtpd.proxy_*`.
    pub(super) fn proxy(&mut self) -> ProxyConfig {
        ProxyConfig {
            listen: self.listen("smtpd.proxy_listen"),
            trusted: self.cidrs("smtpd.proxy_trusted"),
            timeout: self.duration("smtpd.proxy_timeout"),
        }
    }

    /// `remote.tls`, `remote.tls_policy`, `remote.ca_file`.
    pub(super) fn remote_tls(&mut self) -> RemoteTlsConfig {
        let level = TlsLevel::parse(&self.string("remote.tls")).unwrap_or(TlsLevel::May);
        let key = "remote.tls_policy";
        let (_, value) = self.raw(key);
        let mut policy = BTreeMap::new();
        match value.as_table() {
            Some(table) => {
                for (domain, v) in table {
                    let d = values::parse_hostname(domain);
                    let l = v.as_str().and_then(TlsLevel::parse);
                    match (d, l) {
                        (Ok(d), Some(l)) => {
                            policy.insert(d, l);
                        }
                        (Err(e), _) => self.issue(key, format!("domain {domain:?}"), e.into()),
                        (_, None) => self.bad(key, v, "one of: none, may, encrypt, verify"),
                    }
                }
            }
            None => self.bad(
                key,
                &value,
                "a table of domain = \"none|may|encrypt|verify\"",
            ),
        }
        RemoteTlsConfig {
            level,
            policy,
            ca_file: self.opt_path("remote.ca_file"),
            credentials_file: self.opt_path("remote.credentials_file"),
        }
    }

    /// `auth.*`.
    pub(super) fn auth(&mut self) -> AuthConfig {
        let backend = match self.string("auth.backend").as_str() {
            "file" => AuthBackend::File,
            "dovecot" => AuthBackend::Dovecot,
            _ => AuthBackend::None,
        };
        AuthConfig {
            backend,
            password_file: self.opt_path("auth.password_file"),
            dovecot_socket: self.opt_path("auth.dovecot_socket"),
            offer_on_smtpd: self.boolean("auth.offer_on_smtpd"),
            senders: self.senders("auth.senders"),
            max_failures: self.int("auth.max_failures") as u32,
            failure_window: self.duration("auth.failure_window"),
            failure_delay: self.duration("auth.failure_delay"),
        }
    }

    /// A table of user = ["addr@domain", "@domain"].
    fn senders(&mut self, key: &'static str) -> BTreeMap<String, Vec<String>> {
        let (_, value) = self.raw(key);
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
