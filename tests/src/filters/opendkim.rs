//! OpenDKIM (milter) signing and verifying for `localhost.test` with a test key made by
//! `opendkim-genkey`, on 127.0.0.1:`port`; and an independent verifier: dkimpy (Debian's
//! python3-dkim) with a DNS function that returns the test key's public record.

use super::{daemon_user, dir_for, have_peer, tcp_answers, Peer};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const PROGRAM: &str = "/usr/sbin/opendkim";
pub const PACKAGE: &str = "opendkim";
pub const DOMAIN: &str = "localhost.test";
pub const SELECTOR: &str = "test";

/// The Python that has Debian's python3-dkim (a `python3` earlier in PATH may not).
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";

const VERIFY: &str = r#"
import re, sys
import dkim
record = "".join(re.findall(r'"([^"]*)"', open(sys.argv[1]).read())).encode()
def dnsfunc(name, timeout=5):
    return record if name == b"test._domainkey.localhost.test." else None
message = open(sys.argv[2], "rb").read()
d = dkim.DKIM(message)
ok = d.verify(dnsfunc=dnsfunc)
print("verified" if ok else "FAILED", d.domain, d.signature_fields.get(b"s"))
sys.exit(0 if ok else 1)
"#;

pub struct OpenDkim {
    pub peer: Peer,
    pub port: u16,
    /// The public key as opendkim-genkey wrote it (a zone file TXT record).
    pub public: PathBuf,
}

impl OpenDkim {
    /// Makes a test key and starts `opendkim` in sign+verify mode, or returns `None`
    /// after the SKIP line when opendkim, opendkim-tools or python3-dkim is missing.
    pub fn start(test: &str, dir: &Path, port: u16) -> Option<OpenDkim> {
        if !have_peer(test, PACKAGE, &[PROGRAM])
            || !have_peer(test, "opendkim-tools", &["/usr/sbin/opendkim-genkey"])
            || !have_dkimpy(test)
        {
            return None;
        }
        let base = dir.join("opendkim");
        let keys = base.join("keys");
        std::fs::create_dir_all(&keys).expect("mkdir");
        let out = Command::new("/usr/sbin/opendkim-genkey")
            .args(["-b", "1024", "-d", DOMAIN, "-s", SELECTOR, "-D"])
            .arg(&keys)
            .output()
            .expect("opendkim-genkey");
        assert!(
            out.status.success(),
            "opendkim-genkey: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let user = daemon_user("opendkim");
        // The key must be readable by the user opendkim runs as, and by nobody else.
        if user.is_some() {
            dir_for(&keys, "opendkim");
        }
        let conf = base.join("opendkim.conf");
        let mut text = format!(
            "Syslog no
Mode sv
Domain {DOMAIN}
Selector {SELECTOR}
KeyFile {key}
Socket inet:{port}@127.0.0.1
PidFile {pid}
Canonicalization relaxed/simple
InternalHosts 127.0.0.1
On-NoSignature accept
RequireSafeKeys false
",
            key = keys.join(format!("{SELECTOR}.private")).display(),
            pid = base.join("opendkim.pid").display(),
        );
        if let Some(u) = &user {
            text.push_str(&format!("UserID {u}\n"));
        }
        std::fs::write(&conf, text).expect("opendkim.conf");
        let mut cmd = Command::new(PROGRAM);
        cmd.arg("-f").arg("-x").arg(&conf);
        let mut peer = Peer::spawn("opendkim", cmd, &dir.join("opendkim.log"));
        peer.wait_ready(|| tcp_answers(port));
        Some(OpenDkim {
            peer,
            port,
            public: keys.join(format!("{SELECTOR}.txt")),
        })
    }

    /// Verifies the first DKIM signature of the message in `file` with dkimpy and the
    /// test key: `Ok(report)` when it verifies, `Err(report)` otherwise.
    pub fn verify(&self, file: &Path) -> Result<String, String> {
        let out = Command::new(SYSTEM_PYTHON)
            .arg("-c")
            .arg(VERIFY)
            .arg(&self.public)
            .arg(file)
            .output()
            .expect("python3");
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(report)
        } else {
            Err(report)
        }
    }
}

/// True when Debian's python3-dkim can be imported (SKIP line otherwise).
pub fn have_dkimpy(test: &str) -> bool {
    let ok = Command::new(SYSTEM_PYTHON)
        .args(["-c", "import dkim"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var("SLOOP_REQUIRE_PEERS").as_deref() != Ok("1"),
            "{test}: python3-dkim not installed and SLOOP_REQUIRE_PEERS=1"
        );
        println!("SKIP: {test}: python3-dkim not installed");
    }
    ok
}
