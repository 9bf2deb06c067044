//! Shared by the local-account tests (`local_users.rs`, `local_spawner.rs`): test
//! accounts made with `useradd -m`, an SMTP sender, and process helpers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use sloop_tests::Smtp;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A local account made for one test, removed (with its home) on drop.
pub struct Account {
    pub name: String,
    pub home: PathBuf,
    pub uid: u32,
}

impl Account {
    pub fn create(tag: &str) -> Account {
        let name = format!("sl{tag}{}", std::process::id() % 100_000);
        let _ = Command::new("userdel").args(["-r", &name]).output();
        let out = Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", &name])
            .output()
            .expect("useradd");
        assert!(out.status.success(), "useradd {name}: {out:?}");
        let pw = nix::unistd::User::from_name(&name).unwrap().unwrap();
        Account {
            name,
            home: pw.dir,
            uid: pw.uid.as_raw(),
        }
    }

    /// Writes a file in the home directory owned by the account.
    pub fn write(&self, file: &str, text: &str, mode: u32) -> PathBuf {
        let p = self.home.join(file);
        std::fs::write(&p, text).unwrap();
        std::os::unix::fs::chown(&p, Some(self.uid), None).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-KILL", "-u", &self.name])
            .output();
        let _ = Command::new("userdel").args(["-r", &self.name]).output();
    }
}

pub fn uid_of(name: &str) -> u32 {
    nix::unistd::User::from_name(name)
        .unwrap()
        .unwrap()
        .uid
        .as_raw()
}

pub fn send(port: u16, rcpt: &str, subject: &str) {
    let mut s = Smtp::connect(port);
    assert_eq!(s.code(), 220);
    assert_eq!(s.cmd("EHLO client.test"), 250);
    assert_eq!(s.cmd("MAIL FROM:<alice@far.test>"), 250);
    assert_eq!(s.cmd(&format!("RCPT TO:<{rcpt}>")), 250, "RCPT {rcpt}");
    assert_eq!(s.cmd("DATA"), 354);
    s.send_raw(
        format!(
            "From: alice@far.test\r\nSubject: {subject}\r\n\r\nFrom the start of a line.\r\nbody of {subject}\r\n.\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(s.code(), 250);
    assert_eq!(s.cmd("QUIT"), 221);
}

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// A child killed when the test ends, even by a panic.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
