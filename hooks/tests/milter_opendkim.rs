//! `MilterSession` against the real OpenDKIM (Debian's `opendkim`): the filter signs
//! a message from example.test, `apply_edits` puts the signature into the message, and
//! an independent verifier (Python's `dkim` module, `python3-dkim`) checks it with the
//! public key from the `opendkim-genkey` TXT record; and the same on one connection
//! kept for three SMTP sessions in a row (`SMFIC_QUIT_NC`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sloop_common::config::hooks::{HookSocket, MilterHook, OnError};
use sloop_common::spool::{Envelope, Recipient};
use sloop_hooks::milter::{
    apply_edits, ConnectInfo, Edit, Macros, MilterReply, MilterSession, Released,
};

const PYTHON: &str = "/usr/bin/python3";

/// True when the peers are there; else prints SKIP (or fails under SLOOP_REQUIRE_PEERS).
fn peers_installed(test: &str) -> bool {
    let dkim_module = Command::new(PYTHON)
        .args(["-c", "import dkim"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let missing = [
        ("opendkim", Path::new("/usr/sbin/opendkim").exists()),
        (
            "opendkim-tools",
            Path::new("/usr/sbin/opendkim-genkey").exists(),
        ),
        ("python3-dkim", dkim_module),
    ]
    .into_iter()
    .find(|(_, there)| !there);
    match missing {
        None => true,
        Some((package, _)) => {
            assert!(
                std::env::var("SLOOP_REQUIRE_PEERS").as_deref() != Ok("1"),
                "{test}: {package} not installed and SLOOP_REQUIRE_PEERS=1"
            );
            println!("SKIP: {test}: {package} not installed");
            false
        }
    }
}

/// The running filter; killed and its directory removed when dropped.
struct OpenDkim {
    child: Child,
    dir: PathBuf,
}

impl Drop for OpenDkim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_opendkim(port: u16) -> OpenDkim {
    let dir = std::env::temp_dir().join(format!(
        "sloop-milter-opendkim-{}-{port}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let genkey = Command::new("/usr/sbin/opendkim-genkey")
        .arg("-D")
        .arg(&dir)
        .args(["-d", "example.test", "-s", "sloop"])
        .status()
        .unwrap();
    assert!(genkey.success());
    let conf = dir.join("opendkim.conf");
    std::fs::write(
        &conf,
        format!(
            "Mode sv\nDomain example.test\nSelector sloop\nKeyFile {}\n\
             Socket inet:{port}@127.0.0.1\nCanonicalization relaxed/simple\n\
             RequireSafeKeys no\nSyslog no\nPidFile {}\n",
            dir.join("sloop.private").display(),
            dir.join("opendkim.pid").display()
        ),
    )
    .unwrap();
    let child = Command::new("/usr/sbin/opendkim")
        .arg("-f")
        .arg("-x")
        .arg(&conf)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let filter = OpenDkim { child, dir };
    // Ready when it listens.
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "opendkim did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    filter
}

fn hook(port: u16) -> MilterHook {
    MilterHook {
        name: "opendkim".into(),
        socket: HookSocket::Inet {
            host: "127.0.0.1".into(),
            port,
        },
        on_error: OnError::Tempfail,
        connect_timeout: Duration::from_secs(10),
        command_timeout: Duration::from_secs(30),
        content_timeout: Duration::from_secs(30),
        listeners: Vec::new(),
        reuse: true,
    }
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

/// One SMTP session's events on `s`, message number `n`; returns the message with
/// the filter's edits applied.
fn sign(s: &mut MilterSession, n: u32) -> Vec<u8> {
    let mut macros = Macros::new();
    macros
        .set("j", "mx.example.test")
        .set("{daemon_name}", "sloop")
        .set("v", "Sloop")
        .set("{client_addr}", "127.0.0.1")
        .set("{client_name}", "localhost")
        .set("{client_port}", &(40000 + n).to_string())
        .set("i", &format!("4FqT2xQ{n}"));
    let info = ConnectInfo {
        hostname: "localhost".into(),
        addr: Some("127.0.0.1".parse().unwrap()),
        port: 40000 + n as u16,
    };
    let ok = |r: MilterReply| assert!(matches!(r, MilterReply::Continue | MilterReply::Accept));
    ok(s.connect(&info, &macros, deadline()).unwrap());
    ok(s.helo("client.example.test", &macros, deadline()).unwrap());
    ok(
        s.mail(&["<alice@example.test>".into()], &macros, deadline())
            .unwrap(),
    );
    ok(s.rcpt(&["<bob@example.org>".into()], &macros, deadline())
        .unwrap());
    ok(s.data(&macros, deadline()).unwrap());
    let original = format!(
        "Received: from client.example.test (localhost [127.0.0.1])\r\n\
\tby mx.example.test (Sloop) with ESMTP id 4FqT2xQ{n}\r\n\
From: Alice <alice@example.test>\r\n\
To: Bob <bob@example.org>\r\n\
Subject: Signed by OpenDKIM through Sloop's milter client, number {n}\r\n\
Date: Thu, 03 Dec 2026 06:00:0{n} +0000\r\n\
Message-ID: <signed.{n}@example.test>\r\n\
\r\n\
Hello Bob,\r\n\
\r\n\
 this line starts with a space, and the next one is empty.\r\n\
\r\n\
-- \r\n\
Alice {n}\r\n"
    );
    let (reply, edits) = s
        .message(
            original.as_bytes(),
            &macros,
            Duration::from_secs(30),
            deadline(),
        )
        .unwrap();
    ok(reply);
    let signature = edits.iter().find(|e| match e {
        Edit::AddHeader { name, .. } | Edit::InsertHeader { name, .. } => name == "DKIM-Signature",
        _ => false,
    });
    let Some(signature) = signature else {
        panic!("no DKIM-Signature from opendkim: {edits:?}");
    };
    println!("opendkim sent {signature:?}");
    let mut message = original.into_bytes();
    let mut envelope = Envelope::new(
        "alice@example.test",
        vec![Recipient::new("bob@example.org")],
    );
    apply_edits(&edits, &mut message, &mut envelope).unwrap();
    assert!(message.ends_with(format!("\r\n-- \r\nAlice {n}\r\n").as_bytes()));
    message
}

/// dkimpy verifies `message` with the test key.
fn verify(filter: &OpenDkim, message: &[u8], n: u32) {
    let signed = filter.dir.join(format!("signed-{n}.eml"));
    std::fs::write(&signed, message).unwrap();
    let verify = r#"
import re, sys, dkim
message = open(sys.argv[1], "rb").read()
record = "".join(re.findall(r'"([^"]*)"', open(sys.argv[2]).read()))
def dnsfunc(name, timeout=5):
    assert name == b"sloop._domainkey.example.test.", name
    return record.encode()
ok = dkim.verify(message, dnsfunc=dnsfunc)
print("dkim verify:", ok)
sys.exit(0 if ok else 1)
"#;
    let mut py = Command::new(PYTHON)
        .arg("-")
        .arg(&signed)
        .arg(filter.dir.join("sloop.txt"))
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    py.stdin
        .take()
        .unwrap()
        .write_all(verify.as_bytes())
        .unwrap();
    let status = py.wait().unwrap();
    assert!(
        status.success(),
        "dkimpy did not verify:\n{}",
        String::from_utf8_lossy(message)
    );
}

#[test]
fn opendkim_signs_and_dkimpy_verifies() {
    if !peers_installed("opendkim_signs_and_dkimpy_verifies") {
        return;
    }
    let filter = start_opendkim(23401);
    let mut s = MilterSession::open(&hook(23401), deadline()).unwrap();
    let message = sign(&mut s, 1);
    s.quit();
    verify(&filter, &message, 1);
}

#[test]
fn opendkim_signs_session_after_session_on_one_kept_connection() {
    // OpenDKIM answers a signed message with "accept" (libmilter back at HELO): each
    // session ends with the unknown-command event, then QUIT_NC, and the next one
    // starts with a connect event on the same connection.
    if !peers_installed("opendkim_signs_session_after_session_on_one_kept_connection") {
        return;
    }
    let filter = start_opendkim(23402);
    let mut s = MilterSession::open(&hook(23402), deadline()).unwrap();
    for n in 1..=3 {
        if n > 1 {
            assert!(s.resume(), "session {n}: the kept connection is not fit");
        }
        assert_eq!(s.sessions(), n);
        let message = sign(&mut s, n);
        verify(&filter, &message, n);
        s = match s.release(deadline()) {
            Released::Kept(s) => *s,
            other => panic!("session {n}: not kept: {other:?}"),
        };
    }
    s.quit();
}
