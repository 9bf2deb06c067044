//! The operator tools end to end: `sloop-sendmail` (and `mailq`) inject and list, the
//! `sloop queue` commands change the spool only by renames, `sloop config` checks and
//! renders the config, and the committed `etc/sloop.toml` / `docs/configuration.md` are
//! fresh renderings of the parameter table (docs/sloop.8.md, docs/sloop-sendmail.1.md).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sloop_common::spool::{open_message, status, QueueState, Spool};
use sloop_tests::{bin, free_port, TestDir};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Exit code, stdout, stderr of a command.
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(program: &Path, args: &[&str], env: &[(&str, &Path)], stdin: &[u8]) -> Out {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn sloop(config: &Path, args: &[&str]) -> Out {
    let mut all = vec!["-c", config.to_str().unwrap()];
    all.extend_from_slice(args);
    run(&bin("sloop"), &all, &[], b"")
}

fn sendmail(config: &Path, args: &[&str], stdin: &[u8]) -> Out {
    let mut all = vec!["-C", config.to_str().unwrap()];
    all.extend_from_slice(args);
    run(&bin("sloop-sendmail"), &all, &[], stdin)
}

fn setup(name: &str) -> (TestDir, PathBuf, Spool) {
    let dir = TestDir::new(name);
    let config = dir.write_config(free_port(), &[], "");
    let spool = Spool::new(dir.spool());
    spool.ensure_layout().unwrap();
    (dir, config, spool)
}

/// The queue as `sloop queue list --json` sees it: (id, state) pairs.
fn listed(config: &Path) -> Vec<(String, String)> {
    let out = sloop(config, &["queue", "list", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let id = e["id"].as_str().unwrap().to_string();
            (id, e["state"].as_str().unwrap().to_string())
        })
        .collect()
}

fn workspace_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

const MSG: &[u8] = b"To: Ann <ann@localhost.test>, bob@localhost.test\n\
Cc: \"Carl, C.\" <carl@remote.test>\n\
Bcc: hidden@localhost.test\n\
Subject: cron output\n\
\n\
line one\n\
.\n\
line after a lone dot\n";

#[test]
fn sendmail_t_i_adds_headers_and_show_and_mailq_see_it() {
    let (dir, config, spool) = setup("tools-sendmail");
    let out = sendmail(&config, &["-t", "-i", "-F", "Cron Daemon"], MSG);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.is_empty(), "quiet without -v: {}", out.stderr);
    let queue = listed(&config);
    assert_eq!(queue.len(), 1);
    let id = &queue[0].0;
    let (env, mut body) = open_message(&spool.path(QueueState::Incoming, id)).unwrap();
    let rcpts: Vec<&str> = env.recipients.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(
        rcpts,
        [
            "ann@localhost.test",
            "bob@localhost.test",
            "carl@remote.test",
            "hidden@localhost.test"
        ]
    );
    assert!(env.sender.ends_with("@sloop.test"), "{}", env.sender);
    let mut text = String::new();
    body.read_to_string(&mut text).unwrap();
    assert!(
        !text.replace("\r\n", "").contains('\n'),
        "bare LF in {text:?}"
    );
    assert!(text.contains("\r\nDate: "), "{text}");
    assert!(text.contains(&format!("\r\nMessage-ID: <{id}@sloop.test>\r\n")));
    assert!(text.contains(&format!("\r\nFrom: \"Cron Daemon\" <{}>\r\n", env.sender)));
    assert!(
        !text.contains("Bcc:") && !text.contains("hidden@"),
        "{text}"
    );
    assert!(text.ends_with("\r\n\r\nline one\r\n.\r\nline after a lone dot\r\n"));

    let show = sloop(&config, &["queue", "show", id]);
    assert_eq!(show.code, 0, "{}", show.stderr);
    assert!(show
        .stdout
        .contains(&format!("Message-ID: <{id}@sloop.test>")));
    assert!(show.stdout.contains("<carl@remote.test>: pending"));
    assert!(show.stdout.contains("Subject: cron output"));
    assert!(
        !show.stdout.contains("line one"),
        "headers only without --body"
    );
    let full = sloop(&config, &["queue", "show", "--body", id]);
    assert!(full.stdout.contains("line after a lone dot"));

    let bp = sendmail(&config, &["-bp"], b"");
    assert_eq!(bp.code, 0);
    assert!(bp.stdout.contains(id.as_str()) && bp.stdout.contains("carl@remote.test"));
    let mailq = dir.path.join("mailq");
    std::os::unix::fs::symlink(bin("sloop-sendmail"), &mailq).unwrap();
    let q = run(&mailq, &[], &[("SLOOP_CONFIG", &config)], b"");
    assert!(
        q.code == 0 && q.stdout.contains(id.as_str()),
        "{}",
        q.stderr
    );
}

#[test]
fn sendmail_without_i_stops_at_dot_and_maps_refusals_to_sysexits() {
    let (_dir, config, spool) = setup("tools-sendmail-codes");
    let out = sendmail(
        &config,
        &["-oem", "-odi", "-f", "<>", "x@localhost.test"],
        MSG,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let id = spool.list(QueueState::Incoming).unwrap().remove(0);
    let (env, mut body) = open_message(&spool.path(QueueState::Incoming, &id)).unwrap();
    assert_eq!(env.sender, "");
    assert_eq!(env.recipients.len(), 1);
    let mut text = String::new();
    body.read_to_string(&mut text).unwrap();
    assert!(text.ends_with("\r\n\r\nline one\r\n"), "{text}");
    assert!(!text.contains("Bcc"));

    let no_rcpt = sendmail(&config, &[], b"Subject: x\n\nbody\n");
    assert_eq!(no_rcpt.code, 64, "no recipients is a usage error");
    let bad = sendmail(&config, &["-bs"], b"");
    assert_eq!(bad.code, 64);
    let dir2 = TestDir::new("tools-sendmail-small");
    let small = dir2.write_config(free_port(), &[("smtpd.max_message_size", "\"1K\"")], "");
    let big = vec![b'y'; 100 * 1024];
    let refused = sendmail(&small, &["a@localhost.test"], &big);
    assert_eq!(
        refused.code, 65,
        "too large is EX_DATAERR: {}",
        refused.stderr
    );
    assert!(refused.stderr.contains("exit 31"), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("larger than the limit"),
        "sloop-queue's reason shown"
    );
}

#[test]
fn hold_release_flush_delete_stats_and_unknown_ids() {
    let (_dir, config, spool) = setup("tools-ops");
    for n in 0..3 {
        let msg = format!("Subject: {n}\n\nbody\n");
        let out = sendmail(&config, &["u@localhost.test"], msg.as_bytes());
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let ids: Vec<String> = listed(&config).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 3);
    let state_of = |id: &str| spool.find(id).map(|(s, _)| s);

    let out = sloop(&config, &["queue", "hold", &ids[0], &ids[1]]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(state_of(&ids[0]), Some(QueueState::Hold));
    assert!(listed(&config).contains(&(ids[1].clone(), "hold".into())));
    assert_eq!(sloop(&config, &["queue", "release", &ids[0]]).code, 0);
    assert_eq!(state_of(&ids[0]), Some(QueueState::Incoming));

    spool
        .move_to(&ids[2], QueueState::Incoming, QueueState::Deferred)
        .unwrap();
    status::append(
        &spool,
        &ids[2],
        &[status::result_line(
            0,
            status::Outcome::Defer,
            "4.4.1",
            "connection refused",
        )],
    )
    .unwrap();
    let list = sloop(&config, &["queue", "list"]);
    assert!(
        list.stdout.contains("(connection refused)"),
        "{}",
        list.stdout
    );
    let stats = sloop(&config, &["queue", "stats", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stats.stdout).unwrap();
    assert_eq!(
        (v["incoming"].as_u64(), v["hold"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        (v["deferred"].as_u64(), v["total"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(v["oldest_id"].as_str(), Some(ids[0].as_str()));

    assert_eq!(sloop(&config, &["queue", "flush"]).code, 0);
    assert_eq!(state_of(&ids[2]), Some(QueueState::Incoming));
    assert_eq!(sloop(&config, &["queue", "release", "--all"]).code, 0);
    assert_eq!(state_of(&ids[1]), Some(QueueState::Incoming));

    let out = sloop(&config, &["queue", "delete", &ids[2]]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(state_of(&ids[2]), None);
    assert!(
        !status::path(&spool, &ids[2]).exists(),
        "status log removed"
    );

    let unknown = "0000000000000000000000";
    for args in [["queue", "show", unknown], ["queue", "delete", unknown]] {
        let out = sloop(&config, &args);
        assert_eq!(out.code, 66, "{args:?}");
        assert!(out.stderr.contains(&format!("no such message: {unknown}")));
    }
    let out = sloop(&config, &["queue", "hold", "../../etc/passwd"]);
    assert_eq!(out.code, 64);
    assert!(out.stderr.contains("invalid queue ID"), "{}", out.stderr);
    assert_eq!(sloop(&config, &["queue", "delete", "--all"]).code, 0);
    assert!(listed(&config).is_empty());
    let empty = sloop(&config, &["queue", "list"]);
    assert!(empty.stdout.contains("Mail queue is empty"));
}

#[test]
fn missing_spool_and_bad_config_are_clear_errors() {
    let dir = TestDir::new("tools-nospool");
    let config = dir.write_config(free_port(), &[], "");
    let out = sloop(&config, &["queue", "list"]);
    assert_eq!(out.code, 66);
    assert!(out.stderr.contains("cannot read spool"), "{}", out.stderr);
    let missing = dir.path.join("nope.toml");
    let out = sloop(&missing, &["queue", "list"]);
    assert_eq!(out.code, 78);
    assert!(out.stderr.contains("nope.toml"), "{}", out.stderr);
    let status = sloop(&config, &["status"]);
    assert_eq!(status.code, 3, "sloopd is not running");
    assert!(status.stdout.contains("sloopd: not running"));
}

#[test]
fn config_check_accepts_shipped_configs_and_reports_all_six_errors() {
    let dir = TestDir::new("tools-shipped");
    for file in ["etc/sloop.toml", "etc/dev.toml"] {
        let mut path = workspace_file(file);
        let text = std::fs::read_to_string(&path).unwrap();
        if text.contains("\"/etc/aliases\"") {
            // The packaged config names /etc/aliases, which the package's postinst
            // creates; check it against an aliases file of the test's own.
            let aliases = dir.path.join("aliases");
            std::fs::write(&aliases, "postmaster: root\n").unwrap();
            let copy = dir.path.join("sloop.toml");
            let text = text.replace("\"/etc/aliases\"", &format!("{:?}", aliases));
            std::fs::write(&copy, text).unwrap();
            path = copy;
        }
        let out = run(
            &bin("sloop"),
            &["config", "check", "-c", path.to_str().unwrap()],
            &[],
            b"",
        );
        assert_eq!(out.code, 0, "{file}: {}", out.stderr);
        assert!(out.stdout.contains("config OK"));
    }
    let dir = TestDir::new("tools-badconfig");
    let bad = dir.path.join("bad.toml");
    std::fs::write(
        &bad,
        "[smtpd]\nlisten = [\"127.0.0.1:99999\"]\ngreeting = \"hi\\r\\nthere\"\n\
         max_message_size = \"25X\"\nbogus = 1\n[relay]\nnetworks = [\"10.0.0.0/33\"]\n\
         [local]\naliases = \"/nonexistent/aliases\"\n",
    )
    .unwrap();
    let out = sloop(&bad, &["config", "check"]);
    assert_eq!(out.code, 78);
    for key in [
        "smtpd.listen",
        "smtpd.greeting",
        "smtpd.max_message_size",
        "smtpd.bogus",
        "relay.networks",
        "local.aliases",
    ] {
        assert!(out.stderr.contains(key), "{key} missing in {}", out.stderr);
    }
    assert!(out.stderr.contains("6 errors") && out.stderr.contains("bad.toml"));
    let good = dir.write_config(free_port(), &[], "");
    let show = sloop(&good, &["config", "check", "--show"]);
    assert_eq!(show.code, 0);
    assert!(show.stdout.contains("greeting = ") && show.stdout.contains("# default"));
}

#[test]
fn shipped_sample_config_and_reference_are_fresh() {
    let sample = run(&bin("sloop"), &["config", "sample"], &[], b"");
    let on_disk = std::fs::read_to_string(workspace_file("etc/sloop.toml")).unwrap();
    assert!(
        sample.stdout == on_disk,
        "etc/sloop.toml is stale: regenerate with `sloop config sample > etc/sloop.toml`"
    );
    let docs = run(&bin("sloop"), &["config", "docs"], &[], b"");
    let on_disk = std::fs::read_to_string(workspace_file("docs/configuration.md")).unwrap();
    assert!(
        docs.stdout == on_disk,
        "docs/configuration.md is stale: regenerate with `sloop config docs > docs/configuration.md`"
    );
}
