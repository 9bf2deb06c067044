//! clamd and clamav-milter with the tiny signature database shipped in
//! `tests/data/clamav/sloop-test.ndb` (one body signature: the EICAR test string; there
//! is no internet to fetch ClamAV's own databases from). clamd listens on a unix socket
//! in the test's directory, clamav-milter on 127.0.0.1:`port` and rejects infected mail
//! with `RejectMsg`.

use super::{daemon_user, dir_for, have_peer, tcp_answers, unix_answers, Peer};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const CLAMD: &str = "/usr/sbin/clamd";
pub const MILTER: &str = "/usr/sbin/clamav-milter";

/// The name clamd gives the test signature (`.UNOFFICIAL`: not from ClamAV's databases).
pub const VIRUS_NAME: &str = "Sloop-Test.EICAR.UNOFFICIAL";

/// clamav-milter's reply text for an infected message (`%v` is the virus name).
pub const REJECT_TEXT: &str = "Rejected by clamav-milter: %v";

/// The shipped signature database.
pub fn database() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join("clamav")
        .join("sloop-test.ndb")
}

pub struct ClamavMilter {
    /// clamav-milter first, so it stops before the clamd it talks to.
    pub milter: Peer,
    pub clamd: Peer,
    pub port: u16,
}

impl ClamavMilter {
    pub fn start(test: &str, dir: &Path, port: u16) -> Option<ClamavMilter> {
        if !have_peer(test, "clamav-daemon", &[CLAMD])
            || !have_peer(test, "clamav-milter", &[MILTER])
        {
            return None;
        }
        let base = dir.join("clamav");
        let db = base.join("db");
        std::fs::create_dir_all(&db).expect("mkdir");
        std::fs::create_dir_all(base.join("tmp")).expect("mkdir");
        std::fs::copy(database(), db.join("sloop-test.ndb")).expect("copy database");
        let user = daemon_user("clamav");
        if user.is_some() {
            dir_for(&base, "clamav");
        }
        let user_line = user.map(|u| format!("User {u}\n")).unwrap_or_default();
        let sock = base.join("clamd.sock");
        std::fs::write(
            base.join("clamd.conf"),
            format!(
                "Foreground yes\nLocalSocket {sock}\nLocalSocketMode 666\nDatabaseDirectory {db}\n\
                 PidFile {base}/clamd.pid\nTemporaryDirectory {base}/tmp\nLogFile {base}/clamd-file.log\n\
                 LogVerbose yes\n{user_line}",
                sock = sock.display(),
                db = db.display(),
                base = base.display(),
            ),
        )
        .expect("clamd.conf");
        std::fs::write(
            base.join("clamav-milter.conf"),
            format!(
                "MilterSocket inet:{port}@127.0.0.1\nClamdSocket unix:{sock}\nForeground yes\n\
                 OnInfected Reject\nRejectMsg {REJECT_TEXT}\nLogInfected Full\n\
                 PidFile {base}/milter.pid\nTemporaryDirectory {base}/tmp\n\
                 LogFile {base}/milter-file.log\n{user_line}",
                sock = sock.display(),
                base = base.display(),
            ),
        )
        .expect("clamav-milter.conf");
        let mut cmd = Command::new(CLAMD);
        cmd.arg("-c").arg(base.join("clamd.conf"));
        let mut clamd = Peer::spawn("clamd", cmd, &dir.join("clamd.log"));
        clamd.wait_ready(|| unix_answers(&sock));
        let mut cmd = Command::new(MILTER);
        cmd.arg("-c").arg(base.join("clamav-milter.conf"));
        let mut milter = Peer::spawn("clamav-milter", cmd, &dir.join("clamav-milter.log"));
        milter.wait_ready(|| tcp_answers(port));
        Some(ClamavMilter {
            milter,
            clamd,
            port,
        })
    }
}
