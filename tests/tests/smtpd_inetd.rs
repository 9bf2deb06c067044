//! Dialogue tests through `sloop-smtpd --inetd` (one session on stdin/stdout, no
//! sloopd): scripts of client lines and the reply codes expected, plus the early-talker
//! refusal, which a file on stdin makes deterministic; and the worker's start-up
//! checks of the descriptors it is told to adopt.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sloop_tests::{bin, free_port, TestDir};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn setup(name: &str) -> (TestDir, PathBuf) {
    let dir = TestDir::new(name);
    let q = dir.path.join("queue.sh");
    let script = format!(
        "#!/bin/sh\ncat > {0:?}/\"$SLOOP_QUEUE_ID\".msg\nexit 0\n",
        dir.path.display().to_string()
    );
    std::fs::write(&q, script).unwrap();
    std::fs::set_permissions(&q, std::fs::Permissions::from_mode(0o755)).unwrap();
    let qp = format!("{:?}", q.display().to_string());
    let cfg = dir.write_config(free_port(), &[("smtpd.queue_program", &qp)], "");
    (dir, cfg)
}

/// Reply codes (one per reply) of a session fed `script` after the greeting.
fn dialogue(cfg: &Path, script: &str) -> (Vec<u16>, String) {
    let mut child = Command::new(bin("sloop-smtpd"))
        .args(["--inetd", "-c"])
        .arg(cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut greeting = String::new();
    out.read_line(&mut greeting).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(script.replace('\n', "\r\n").as_bytes())
        .unwrap();
    drop(stdin);
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(child.wait().unwrap().success());
    let codes = std::iter::once(greeting.as_str())
        .chain(rest.lines())
        .filter(|l| l.as_bytes().get(3) == Some(&b' '))
        .map(|l| l[..3].parse().unwrap())
        .collect();
    (codes, log)
}

#[test]
fn dialogue_scripts() {
    let (dir, cfg) = setup("smtpd-inetd");
    let table: &[(&str, &[u16])] = &[
        ("QUIT\n", &[220, 221]),
        ("EHLO c.test\nMAIL FROM:<a@b.example>\nRCPT TO:<u@localhost.test>\nDATA\nSubject: s\n\n.\nQUIT\n", &[220, 250, 250, 250, 354, 250, 221]),
        ("EHLO c.test\nMAIL FROM:<a@b.example>\nRCPT TO:<x@remote.example>\nRCPT TO:<x%remote.example@localhost.test>\nQUIT\n", &[220, 250, 250, 554, 554, 221]),
        ("HELO c.test\nMAIL FROM:<a@b.example> SIZE=10\nMAIL FROM:<a@b.example>\nRSET\nNOOP\nVRFY x\nEXPN x\nSTARTTLS\nQUIT\n", &[220, 250, 555, 250, 250, 250, 252, 502, 502, 221]),
        ("DATA\nRCPT TO:<u@localhost.test>\nBDAT 3 LAST\nabcQUIT\n", &[220, 503, 503, 503, 221]),
    ];
    for (script, want) in table {
        let (codes, log) = dialogue(&cfg, script);
        assert_eq!(&codes, want, "{script}\n{log}");
    }
    // A real message (CRLF line ends kept by the \n -> \r\n translation).
    let script = "EHLO c.test\nMAIL FROM:<a@b.example>\nRCPT TO:<u@localhost.test>\nDATA\nSubject: s\r\n\r\n..hi\r\n.\nQUIT\n";
    let (codes, log) = dialogue(&cfg, &script.replace("\r\n", "\n"));
    assert_eq!(codes, vec![220, 250, 250, 250, 354, 250, 221], "{log}");
    // Two messages were queued (the second script's and this one): take this one.
    let text = sloop_tests::files_under(&dir.path)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "msg"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .find(|t| t.contains("hi\r\n"))
        .unwrap();
    assert!(
        text.starts_with("Received: from c.test (unknown [0.0.0.0])"),
        "{text}"
    );
    assert!(text.ends_with("\r\nSubject: s\r\n\r\n.hi\r\n"), "{text}");
    assert!(
        log.contains(
            "disconnect from unknown[0.0.0.0] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5"
        ),
        "{log}"
    );
}

#[test]
fn broken_aliases_file_gives_451_not_silence() {
    let dir = TestDir::new("smtpd-inetd-aliases");
    let aliases = dir.path.join("aliases");
    std::fs::write(&aliases, "this line has no colon\n").unwrap();
    let a = format!("{:?}", aliases.display().to_string());
    let cfg = dir.write_config(free_port(), &[("local.aliases", &a)], "");
    let (codes, log) = dialogue(
        &cfg,
        "EHLO c.test\nMAIL FROM:<a@b.example>\nRCPT TO:<u@localhost.test>\nQUIT\n",
    );
    assert_eq!(codes, vec![220, 250, 250, 451, 221], "{log}");
    assert!(log.contains("local recipients get 451 4.3.0"), "{log}");
}

/// Input that is there before the greeting (a file on stdin is always readable).
#[test]
fn early_talker_is_refused() {
    let (dir, cfg) = setup("smtpd-inetd-early");
    let input = dir.path.join("early.txt");
    std::fs::write(&input, b"EHLO early\r\nMAIL FROM:<a@b.example>\r\nQUIT\r\n").unwrap();
    let out = Command::new(bin("sloop-smtpd"))
        .args(["--inetd", "-c"])
        .arg(&cfg)
        .stdin(std::fs::File::open(&input).unwrap())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let codes: Vec<&str> = text.lines().map(|l| &l[..4]).collect();
    assert_eq!(codes, vec!["554 ", "503 ", "503 ", "221 "], "{text}");
    assert!(text.starts_with("554 5.5.1 "), "{text}");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("early talker"), "{log}");
}

/// Starts `sloop-smtpd` as sloopd would, with a listening socket and a pipe inherited
/// and `env` built from their numbers (`{L}`, `{P}`); returns its exit code (`None`
/// when it was still running after 5 s) and its stderr.
fn start_with_fds(cfg: &Path, listen: &str, status: &str) -> (Option<i32>, String) {
    const SCRIPT: &str = r#"
import os, socket, subprocess, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
r, w = os.pipe()
fds = {"L": str(s.fileno()), "P": str(w)}
env = dict(os.environ)
env["SLOOP_LISTEN_FDS"] = sys.argv[3].format(**fds)
if sys.argv[4]:
    env["SLOOP_STATUS_FD"] = sys.argv[4].format(**fds)
try:
    p = subprocess.run([sys.argv[1], "-c", sys.argv[2]], env=env, pass_fds=[s.fileno(), w],
                       capture_output=True, timeout=5)
    print(p.returncode)
    sys.stderr.write(p.stderr.decode())
except subprocess.TimeoutExpired as e:
    print("running")
    sys.stderr.write((e.stderr or b"").decode())
"#;
    let smtpd = bin("sloop-smtpd");
    let (code, out, err) = sloop_tests::python(
        SCRIPT,
        &[
            smtpd.to_str().unwrap(),
            cfg.to_str().unwrap(),
            listen,
            status,
        ],
    );
    assert_eq!(code, 0, "{err}");
    (out.trim().parse().ok(), err)
}

/// Regression: the descriptor numbers in SLOOP_LISTEN_FDS and SLOOP_STATUS_FD were
/// adopted without a check that they are distinct or of the right kind: one descriptor
/// named twice got two owners (and a double close), a pipe named as a listener was
/// polled forever. The worker now refuses to start, naming the descriptor.
#[test]
fn inherited_descriptors_are_checked() {
    let (_dir, cfg) = setup("smtpd-fds");
    for (listen, status, want) in [
        ("{L},{L}", "", "passed twice"),
        ("{L}", "{L}", "passed twice"),
        ("{P}", "", "not a listening socket"),
        ("{L}", "{L}0", "not open"),
        ("{L}", "2", "standard stream"),
        ("{L},x", "", "not a list of descriptor numbers"),
    ] {
        let (code, err) = start_with_fds(&cfg, listen, status);
        assert!(
            code.is_some_and(|c| c != 0) && err.contains(want),
            "{listen} / {status}: exit {code:?}, want {want:?}: {err}"
        );
    }
}
