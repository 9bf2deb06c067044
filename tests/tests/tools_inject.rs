//! `sloop-queue`, end to end: concurrent injections all commit; SIGKILL at random
//! moments never leaves an incomplete committed message; refusals exit with
//! qmail-queue's codes and leave nothing in the spool (docs/architecture.md §3 invariant 1,
//! §4; docs/sloop-queue.8.md).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sloop_common::spool::{open_message, queue_id, QueueState, Spool};
use sloop_tests::{bin, free_port, TestDir};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Starts sloop-queue with `config`; returns the child and the write end of its fd 1.
fn spawn_queue(config: &Path, preset_id: Option<&str>) -> (Child, std::fs::File) {
    let (env_read, env_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let mut cmd = Command::new(bin("sloop-queue"));
    cmd.arg("-c")
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::from(env_read))
        .stderr(Stdio::null());
    if let Some(id) = preset_id {
        cmd.env("SLOOP_QUEUE_ID", id);
    }
    let child = cmd.spawn().expect("spawn sloop-queue");
    (child, std::fs::File::from(env_write))
}

/// Runs one injection to completion; returns the exit code.
fn inject(config: &Path, message: &[u8], envelope: &[u8]) -> i32 {
    let (mut child, mut fd1) = spawn_queue(config, None);
    let mut fd0 = child.stdin.take().unwrap();
    let _ = fd0.write_all(message);
    drop(fd0);
    let _ = fd1.write_all(envelope);
    drop(fd1);
    child.wait().unwrap().code().unwrap_or(-1)
}

fn envelope(sender: &str, rcpts: &[&str]) -> Vec<u8> {
    let mut e = format!("F{sender}\0");
    for r in rcpts {
        e.push_str(&format!("T{r}\0"));
    }
    e.push('\0');
    e.into_bytes()
}

fn content_of(path: &Path) -> Vec<u8> {
    let (_, mut body) = open_message(path).unwrap();
    let mut v = Vec::new();
    body.read_to_end(&mut v).unwrap();
    v
}

fn setup(name: &str, overrides: &[(&str, &str)]) -> (TestDir, std::path::PathBuf, Spool) {
    let dir = TestDir::new(name);
    let config = dir.write_config(free_port(), overrides, "");
    let spool = Spool::new(dir.spool());
    spool.ensure_layout().unwrap();
    (dir, config, spool)
}

fn assert_spool_empty(spool: &Spool) {
    for s in QueueState::ALL {
        assert!(spool.list(s).unwrap().is_empty(), "{s} is not empty");
    }
    let tmp: Vec<_> = std::fs::read_dir(spool.tmp_dir()).unwrap().collect();
    assert!(tmp.is_empty(), "tmp/ is not empty: {tmp:?}");
}

#[test]
fn thousand_concurrent_injections_all_commit_and_list() {
    let (_dir, config, spool) = setup("tools-1000", &[]);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let config = config.clone();
            std::thread::spawn(move || {
                let mut codes = Vec::new();
                for batch in 0..5 {
                    let mut running = Vec::new();
                    for k in 0..25 {
                        let n = t * 125 + batch * 25 + k;
                        let msg = format!("Subject: {n}\r\n\r\nmessage {n}\r\n");
                        let (mut child, mut fd1) = spawn_queue(&config, None);
                        let mut fd0 = child.stdin.take().unwrap();
                        fd0.write_all(msg.as_bytes()).unwrap();
                        drop(fd0);
                        fd1.write_all(&envelope("a@x.test", &["b@y.test"])).unwrap();
                        running.push(child);
                    }
                    for mut c in running {
                        codes.push(c.wait().unwrap().code().unwrap_or(-1));
                    }
                }
                codes
            })
        })
        .collect();
    let codes: Vec<i32> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(codes.len(), 1000);
    assert!(codes.iter().all(|c| *c == 0), "non-zero exits: {codes:?}");

    let out = Command::new(bin("sloop"))
        .args(["queue", "list", "--json", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success());
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1000);
    let mut seen = std::collections::HashSet::new();
    for e in list {
        let id = e["id"].as_str().unwrap();
        assert!(seen.insert(id.to_string()), "duplicate ID {id}");
        let content = content_of(&spool.path(QueueState::Incoming, id));
        let text = String::from_utf8(content).unwrap();
        let n: u32 = text[9..text.find("\r\n").unwrap()].parse().unwrap();
        assert_eq!(text, format!("Subject: {n}\r\n\r\nmessage {n}\r\n"));
        assert!(seen.insert(format!("n{n}")), "message {n} twice");
    }
    assert!(std::fs::read_dir(spool.tmp_dir()).unwrap().next().is_none());
}

/// xorshift64: a reproducible random sequence without a dependency.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Message `n`: 200 KiB, every line naming its message and offset.
fn big_message(n: u32) -> Vec<u8> {
    let mut m = format!("Subject: kill test {n}\r\n\r\n").into_bytes();
    let mut line = 0;
    while m.len() < 200 * 1024 {
        m.extend(format!("message {n} line {line:08} {}\r\n", "x".repeat(40)).bytes());
        line += 1;
    }
    m
}

#[test]
fn sigkill_at_random_moments_never_leaves_an_incomplete_message() {
    let (_dir, config, spool) = setup("tools-kill", &[]);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("seed {seed}");
    let mut rng = seed;
    let mut exited_ok = Vec::new();
    let mut sent = std::collections::HashMap::new();
    for n in 0..200u32 {
        let id = queue_id::new_id();
        let msg = big_message(n);
        let (mut child, fd1) = spawn_queue(&config, Some(&id));
        let fd0 = child.stdin.take().unwrap();
        let body = msg.clone();
        // Written slowly in 16 KiB chunks so kills land mid-stream as well as later.
        let writer = std::thread::spawn(move || {
            let (mut fd0, mut fd1) = (fd0, fd1);
            for chunk in body.chunks(16 * 1024) {
                if fd0.write_all(chunk).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_micros(700));
            }
            drop(fd0);
            let _ = fd1.write_all(&envelope("a@x.test", &["b@y.test"]));
        });
        let delay = next_random(&mut rng) % 20_000;
        std::thread::sleep(Duration::from_micros(delay));
        let _ = child.kill();
        let status = child.wait().unwrap();
        writer.join().unwrap();
        if status.code() == Some(0) {
            exited_ok.push(id.clone());
        }
        sent.insert(id, msg);
    }
    // Every committed message is complete and is exactly what was sent.
    let committed = spool.list(QueueState::Incoming).unwrap();
    for id in &committed {
        let expected = sent.get(id).expect("committed ID was one we sent");
        assert!(
            content_of(&spool.path(QueueState::Incoming, id)) == *expected,
            "{id} differs from what was sent (seed {seed})"
        );
    }
    // Every injection that exited 0 is there.
    for id in &exited_ok {
        assert!(committed.contains(id), "{id} exited 0 but is missing");
    }
    println!(
        "{} committed, {} exited 0, of 200",
        committed.len(),
        exited_ok.len()
    );
    // What the kills left behind is only in tmp/, and recovery removes it all.
    spool.clean_tmp(Duration::from_secs(3600)).unwrap();
    assert!(std::fs::read_dir(spool.tmp_dir()).unwrap().next().is_none());
}

#[test]
fn refusals_exit_with_qmail_codes_and_leave_nothing() {
    let (dir, config, spool) = setup("tools-codes", &[("smtpd.max_message_size", "\"1K\"")]);
    let ok_env = envelope("a@x.test", &["b@y.test"]);
    let long = format!("b@{}.test", "y".repeat(2000));
    let cases: [(&str, Vec<u8>, Vec<u8>, i32); 5] = [
        ("oversized", vec![b'x'; 300 * 1024], ok_env.clone(), 31),
        (
            "no recipient",
            b"hi".to_vec(),
            b"Fa@x.test\0\0".to_vec(),
            91,
        ),
        ("no sender", b"hi".to_vec(), b"Tb@y.test\0\0".to_vec(), 91),
        ("truncated", b"hi".to_vec(), b"Fa@x.test\0Tb@y".to_vec(), 91),
        (
            "long address",
            b"hi".to_vec(),
            envelope("a@x.test", &[&long]),
            11,
        ),
    ];
    for (what, message, env, code) in cases {
        assert_eq!(inject(&config, &message, &env), code, "{what}");
    }
    assert_spool_empty(&spool);
    let missing = dir.path.join("missing.toml");
    assert_eq!(inject(&missing, b"hi", &ok_env), 55, "unreadable config");
    assert_eq!(inject(&config, b"hi\r\n", &ok_env), 0);
    assert_eq!(spool.list(QueueState::Incoming).unwrap().len(), 1);
}
