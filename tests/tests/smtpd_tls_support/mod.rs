//! Shared set-up of the TLS and AUTH end-to-end tests: certificates made with the
//! openssl command (an RSA and an ECDSA pair), a password file made with
//! `sloop passwd add` (alice / "alice pw"), and a `sloopd` with `smtpd.listen`,
//! `submission.listen` and `submissions.listen` on free loopback ports. Nothing may
//! relay by address (`relay.networks = []`), so relaying in these tests is earned by AUTH.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use crate::smtpd_support::Server;
use sloop_tests::{bin, free_port, TestDir};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

pub const ALICE_PW: &str = "alice pw";

/// True when `program` can be run; otherwise prints the SKIP line (or fails when
/// `SLOOP_REQUIRE_PEERS=1`).
pub fn have(test: &str, program: &str, package: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        assert!(
            std::env::var("SLOOP_REQUIRE_PEERS").as_deref() != Ok("1"),
            "{test}: {package} not installed and SLOOP_REQUIRE_PEERS=1"
        );
        println!("SKIP: {test}: {package} not installed");
    }
    found
}

/// Certificates and the password file, in their own directory.
pub struct Material {
    pub dir: TestDir,
    pub rsa: (PathBuf, PathBuf),
    pub ecdsa: (PathBuf, PathBuf),
    pub users: PathBuf,
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes a self-signed pair for `sloop.test`, valid 30 days.
pub fn make_pair(dir: &std::path::Path, name: &str, ecdsa: bool) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    let newkey = if ecdsa { "ec" } else { "rsa:2048" };
    let mut args = vec!["req", "-x509", "-newkey", newkey];
    if ecdsa {
        args.extend(["-pkeyopt", "ec_paramgen_curve:prime256v1"]);
    }
    let (k, c) = (key.display().to_string(), cert.display().to_string());
    args.extend([
        "-nodes",
        "-keyout",
        &k,
        "-out",
        &c,
        "-days",
        "30",
        "-subj",
        "/CN=sloop.test",
    ]);
    openssl(&args);
    (cert, key)
}

impl Material {
    pub fn new(name: &str) -> Material {
        let dir = TestDir::new(&format!("{name}-material"));
        let rsa = make_pair(&dir.path, "rsa", false);
        let ecdsa = make_pair(&dir.path, "ecdsa", true);
        let users = dir.path.join("users");
        let cfg = dir.path.join("passwd.toml");
        std::fs::write(
            &cfg,
            format!(
                "[auth]\nbackend = \"file\"\npassword_file = {:?}\n",
                users.display().to_string()
            ),
        )
        .unwrap();
        sloop_passwd(&cfg, "add", "alice", ALICE_PW);
        Material {
            dir,
            rsa,
            ecdsa,
            users,
        }
    }
}

/// Runs `sloop -c cfg passwd <verb> <user>` with `password` on standard input.
pub fn sloop_passwd(cfg: &std::path::Path, verb: &str, user: &str, password: &str) -> String {
    let mut child = Command::new(bin("sloop"))
        .arg("-c")
        .arg(cfg)
        .args(["passwd", verb, user])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sloop passwd {verb} {user}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A running TLS-enabled sloopd.
pub struct TlsServer {
    pub srv: Server,
    pub material: Material,
    /// `smtpd.listen` (port 25 role).
    pub mx: u16,
    /// `submission.listen` (587 role).
    pub sub: u16,
    /// `submissions.listen` (465 role).
    pub subs: u16,
}

impl TlsServer {
    pub fn start(name: &str, overrides: &[(&str, &str)]) -> TlsServer {
        let material = Material::new(name);
        let (sub, subs) = (free_port(), free_port());
        let q = |p: &PathBuf| format!("{:?}", p.display().to_string());
        let (rc, rk, ec, ek, users) = (
            q(&material.rsa.0),
            q(&material.rsa.1),
            q(&material.ecdsa.0),
            q(&material.ecdsa.1),
            q(&material.users),
        );
        let sub_l = format!("[\"127.0.0.1:{sub}\"]");
        let subs_l = format!("[\"127.0.0.1:{subs}\"]");
        let mut all: Vec<(&str, &str)> = vec![
            ("tls.cert_file", &rc),
            ("tls.key_file", &rk),
            ("tls.ecdsa_cert_file", &ec),
            ("tls.ecdsa_key_file", &ek),
            ("auth.backend", "\"file\""),
            ("auth.password_file", &users),
            (
                "auth.senders",
                "{ alice = [\"alice@localhost.test\", \"@alice.test\"] }",
            ),
            ("auth.failure_delay", "\"100ms\""),
            ("submission.listen", &sub_l),
            ("submissions.listen", &subs_l),
            ("relay.networks", "[]"),
            ("remote.routes", "{ \"far.test\" = \"127.0.0.1:9\" }"),
        ];
        all.extend_from_slice(overrides);
        let srv = Server::start(name, &all, &[]);
        let mx = srv.port;
        TlsServer {
            srv,
            material,
            mx,
            sub,
            subs,
        }
    }

    /// Runs a Python script with `MX`, `SUB` and `SUBS` replaced by the ports.
    pub fn python(&self, script: &str, args: &[&str]) -> String {
        let script = script
            .replace("SUBS", &self.subs.to_string())
            .replace("SUB", &self.sub.to_string())
            .replace("MX", &self.mx.to_string());
        let (code, out, err) = sloop_tests::python(&script, args);
        assert_eq!(
            code,
            0,
            "python failed: {err}\nstdout: {out}\nlog:\n{}",
            self.srv.log()
        );
        out
    }

    /// The Received header of the committed message `id`.
    pub fn received(&self, id: &str) -> String {
        let (_, msg) = self.srv.committed(id);
        let text = String::from_utf8_lossy(&msg).into_owned();
        let end = text.find(";").unwrap();
        text[..end].to_string()
    }
}

/// The queue ID in the last `queued as` of `text`.
pub fn last_queued(text: &str) -> String {
    let at = text.rfind("queued as ").expect("a queued reply");
    text[at + 10..]
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap()
        .to_string()
}
