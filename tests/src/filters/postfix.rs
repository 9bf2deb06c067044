//! A private Postfix instance (Debian's package) from a temporary configuration
//! directory: `postfix -c DIR start`, smtpd on 127.0.0.1:`port` only, no chroot, mail
//! for `localhost.test` delivered by virtual(8) into one Maildir, its log in
//! `DIR/../maillog`. Used to prove each filter fixture with the MTA the filters were
//! written for before the same fixture is used against Sloop. Needs root.

use super::{have_peer, have_root, is_root, tcp_answers};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub const PROGRAM: &str = "/usr/sbin/postfix";
pub const PACKAGE: &str = "postfix";

pub struct Postfix {
    pub dir: PathBuf,
    pub port: u16,
}

fn postfix(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(PROGRAM)
        .arg("-c")
        .arg(dir.join("etc"))
        .args(args)
        .output()
        .expect("postfix");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

impl Postfix {
    /// Starts the instance with `main_cf` appended to its main.cf (e.g.
    /// `smtpd_milters = inet:127.0.0.1:23121`), or `None` after the SKIP line.
    pub fn start(test: &str, dir: &Path, port: u16, main_cf: &str) -> Option<Postfix> {
        if !have_peer(test, PACKAGE, &[PROGRAM]) || !have_root(test, "a private Postfix instance") {
            return None;
        }
        let dir = dir.join("postfix");
        let etc = dir.join("etc");
        let mail = dir.join("mail");
        for d in [&etc, &mail, &dir.join("spool"), &dir.join("data")] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        if is_root() {
            super::dir_for(&mail, "nobody");
            super::dir_for(&dir.join("data"), "postfix");
        }
        // Debian's master.cf without chroot and without its port-25 listener.
        let master = std::fs::read_to_string("/etc/postfix/master.cf").expect("master.cf");
        let mut out = String::new();
        for line in master.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if line.starts_with(|c: char| c.is_ascii_alphanumeric()) && f.len() >= 8 {
                if f[1] == "inet" {
                    continue;
                }
                let mut f = f.clone();
                if f[4] == "y" || f[4] == "-" {
                    f[4] = "n";
                }
                out.push_str(&f.join(" "));
            } else {
                out.push_str(line);
            }
            out.push('\n');
        }
        out.push_str(&format!("127.0.0.1:{port} inet n - n - - smtpd\n"));
        std::fs::write(etc.join("master.cf"), out).expect("master.cf");
        let d = dir.display();
        std::fs::write(
            etc.join("main.cf"),
            format!(
                "compatibility_level = 3.6
queue_directory = {d}/spool
data_directory = {d}/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix.test
mydestination =
mynetworks = 127.0.0.0/8
virtual_mailbox_domains = localhost.test
virtual_mailbox_base = {d}/mail
virtual_mailbox_maps = static:mbox/
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
maillog_file_prefixes = {d}
maillog_file = {d}/maillog
milter_default_action = tempfail
{main_cf}
"
            ),
        )
        .expect("main.cf");
        let (ok, text) = postfix(&dir, &["post-install", "create-missing"]);
        assert!(ok, "postfix post-install: {text}");
        let (ok, text) = postfix(&dir, &["start"]);
        let pf = Postfix { dir, port };
        assert!(ok, "postfix start: {text}\n{}", pf.log());
        let up = crate::wait_until(Duration::from_secs(60), || tcp_answers(port));
        assert!(up, "postfix did not listen on {port}:\n{}", pf.log());
        Some(pf)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }

    /// The delivered messages, oldest first.
    pub fn delivered(&self) -> Vec<PathBuf> {
        let mut v: Vec<(std::time::SystemTime, PathBuf)> =
            std::fs::read_dir(self.dir.join("mail").join("mbox").join("new"))
                .map(|rd| {
                    rd.flatten()
                        .map(|e| {
                            let t = e
                                .metadata()
                                .and_then(|m| m.modified())
                                .unwrap_or(std::time::UNIX_EPOCH);
                            (t, e.path())
                        })
                        .collect()
                })
                .unwrap_or_default();
        v.sort();
        v.into_iter().map(|(_, p)| p).collect()
    }

    /// Waits until `n` messages are delivered; returns them.
    pub fn wait_delivered(&self, n: usize) -> Vec<PathBuf> {
        let ok = crate::wait_until(Duration::from_secs(60), || self.delivered().len() >= n);
        assert!(
            ok,
            "postfix delivered {} of {n}:\n{}",
            self.delivered().len(),
            self.log()
        );
        self.delivered()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let (ok, _) = postfix(&self.dir, &["stop"]);
        if !ok {
            let _ = postfix(&self.dir, &["abort"]);
        }
    }
}
