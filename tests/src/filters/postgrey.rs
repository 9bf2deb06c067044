//! postgrey (Postfix policy service, greylisting) on 127.0.0.1:`port`.

use super::{daemon_user, dir_for, have_peer, tcp_answers, Peer};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

pub const PROGRAM: &str = "/usr/sbin/postgrey";
pub const PACKAGE: &str = "postgrey";

pub struct Postgrey {
    pub peer: Peer,
    pub port: u16,
    /// How long postgrey greylists a new triplet (`--delay`).
    pub delay: Duration,
}

impl Postgrey {
    /// Starts postgrey with its database in `dir/postgrey`, or returns `None` after the
    /// SKIP line when the package is missing.
    pub fn start(test: &str, dir: &Path, port: u16, delay: Duration) -> Option<Postgrey> {
        if !have_peer(test, PACKAGE, &[PROGRAM]) {
            return None;
        }
        let db = dir_for(&dir.join("postgrey"), "postgrey");
        std::fs::write(db.join("none"), "").expect("empty whitelist");
        let mut cmd = Command::new(PROGRAM);
        cmd.arg(format!("--inet=127.0.0.1:{port}"))
            .arg(format!("--dbdir={}", db.display()))
            .arg(format!("--delay={}", delay.as_secs()))
            // No whitelists from /etc: this postgrey greylists every client.
            .arg(format!("--whitelist-clients={}", db.join("none").display()))
            .arg(format!(
                "--whitelist-recipients={}",
                db.join("none").display()
            ));
        match daemon_user("postgrey") {
            Some(u) => cmd.arg(format!("--user={u}")).arg("--group=nogroup"),
            None => &mut cmd,
        };
        let mut peer = Peer::spawn("postgrey", cmd, &dir.join("postgrey.log"));
        peer.wait_ready(|| tcp_answers(port));
        Some(Postgrey { peer, port, delay })
    }
}
