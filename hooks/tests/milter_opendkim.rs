//! `MilterSession` against the real OpenDKIM (Debian's `opendkim`): the filter signs
//! a message from example.test, `apply_edits` puts the signature into the message, and
//! an independent verifier (Python's `dkim` module, `python3-dkim`) checks it with the
//! public key from the `opendkim-genkey` TXT record.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sloop_common::config::hooks::{HookSocket, MilterHook, OnError};
use sloop_hooks::milter::{apply_edits, ConnectInfo, Edit, Macros, MilterReply, MilterSession};

const PORT: u16 = 23401;
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

fn start_opendkim() -> OpenDkim {
    let dir = std::env::temp_dir().join(format!("sloop-milter-opendkim-{}", std::process::id()));
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
             Socket inet:{PORT}@127.0.0.1\nCanonicalization relaxed/simple\n\
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
    while TcpStream::connect(("127.0.0.1", PORT)).is_err() {
        assert!(
            Instant::now() < deadline,
            "opendkim did not listen on {PORT}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    filter
}

#[test]
fn opendkim_signs_and_dkimpy_verifies() {
    if !peers_installed("opendkim_signs_and_dkimpy_verifies") {
        return;
    }
    let filter = start_opendkim();
    let hook = MilterHook {
        name: "opendkim".into(),
        socket: HookSocket::Inet {
            host: "127.0.0.1".into(),
            port: PORT,
        },
        on_error: OnError::Tempfail,
        connect_timeout: Duration::from_secs(10),
        command_timeout: Duration::from_secs(30),
        content_timeout: Duration::from_secs(30),
        listeners: Vec::new(),
    };
    let deadline = || Instant::now() + Duration::from_secs(30);
    let mut macros = Macros::new();
    macros
        .set("j", "mx.example.test")
        .set("{daemon_name}", "sloop")
        .set("v", "Sloop")
        .set("{client_addr}", "127.0.0.1")
        .set("{client_name}", "localhost")
        .set("{client_port}", "40000")
        .set("i", "4FqT2xQ1");
    let mut s = MilterSession::open(&hook, deadline()).unwrap();
    let info = ConnectInfo {
        hostname: "localhost".into(),
        addr: Some("127.0.0.1".parse().unwrap()),
        port: 40000,
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
    let original = b"Received: from client.example.test (localhost [127.0.0.1])\r\n\
\tby mx.example.test (Sloop) with ESMTP id 4FqT2xQ1\r\n\
From: Alice <alice@example.test>\r\n\
To: Bob <bob@example.org>\r\n\
Subject: Signed by OpenDKIM through Sloop's milter client\r\n\
Date: Thu, 03 Dec 2026 06:00:00 +0000\r\n\
Message-ID: <signed.1@example.test>\r\n\
\r\n\
Hello Bob,\r\n\
\r\n\
 this line starts with a space, and the next one is empty.\r\n\
\r\n\
-- \r\n\
Alice\r\n";
    let (reply, edits) = s
        .message(original, &macros, Duration::from_secs(30), deadline())
        .unwrap();
    s.quit();
    ok(reply);
    let signature = edits.iter().find(|e| match e {
        Edit::AddHeader { name, .. } | Edit::InsertHeader { name, .. } => name == "DKIM-Signature",
        _ => false,
    });
    let Some(signature) = signature else {
        panic!("no DKIM-Signature from opendkim: {edits:?}");
    };
    println!("opendkim sent {signature:?}");

    let mut message = original.to_vec();
    let mut sender = "alice@example.test".to_string();
    let mut rcpts = vec!["bob@example.org".to_string()];
    apply_edits(&edits, &mut message, &mut sender, &mut rcpts).unwrap();
    assert!(message.ends_with(b"\r\n-- \r\nAlice\r\n"));
    let signed = filter.dir.join("signed.eml");
    std::fs::write(&signed, &message).unwrap();

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
        String::from_utf8_lossy(&message)
    );
}
