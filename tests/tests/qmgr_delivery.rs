//! sloop-qmgr end to end with fake `sloop-deliver` workers (qmgr_support): pick-up,
//! retry, bounce, worker crashes, signals.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod qmgr_support;

use nix::sys::signal::Signal;
use qmgr_support::{python_report, tail, Setup, ALL_OK};
use sloop_common::spool::QueueState;
use sloop_tests::{children_of, nice_of, wait_until};
use std::time::Duration;

#[test]
fn committed_message_is_picked_up_at_once_delivered_and_removed() {
    let s = Setup::new("qmgr-basic", ALL_OK, &[]);
    let mut q = s.start();
    q.wait_log("started:", 10);
    let id = s.inject(
        "alice@localhost.test",
        &[
            "bob@localhost.test",
            "carol@LOCALHOST.test",
            "dave@example.net",
        ],
        "basic",
    );
    // The trigger wakes the qmgr: the file leaves incoming/ within a second.
    let picked = wait_until(Duration::from_secs(1), || {
        !s.spool.path(QueueState::Incoming, &id).exists()
    });
    assert!(picked, "not picked up within 1s:\n{}", q.log_text());
    q.wait_log(&format!("{id}: removed"), 10);
    assert!(s.queue_empty());
    assert!(!sloop_common::spool::status::path(&s.spool, &id).exists());
    let counts = s.ok_counts();
    for r in [
        "bob@localhost.test",
        "carol@LOCALHOST.test",
        "dave@example.net",
    ] {
        assert_eq!(counts.get(&(id.clone(), r.to_string())), Some(&1), "{r}");
    }
    let log = q.log_text();
    assert!(log.contains(&format!("{id}: to=<dave@example.net>, relay=fake, delay=")));
    assert!(log.contains("dsn=2.0.0, status=sent (delivered)"));

    // An invalid config on SIGHUP is refused and the qmgr keeps working.
    std::fs::write(&s.config, "[queue]\nretry_min = \"soon\"\n").unwrap();
    q.signal(Signal::SIGHUP);
    q.wait_log("reload refused", 10);
    let id2 = s.inject(
        "alice@localhost.test",
        &["bob@localhost.test"],
        "after reload",
    );
    q.wait_log(&format!("{id2}: removed"), 10);
    // SIGTERM: a clean exit.
    q.signal(Signal::SIGTERM);
    assert_eq!(q.wait_exit(10), Some(0), "{}", q.log_text());
}

#[test]
fn deferred_recipient_is_retried_and_then_delivered() {
    let decide = "def decide(qid, rcpt, sender, first):\n    if first:\n        return ('defer', '4.4.1', 'connection refused')\n    return ('ok', '2.0.0', 'delivered')\n";
    let s = Setup::new("qmgr-defer", decide, &[]);
    let q = s.start();
    let id = s.inject("alice@localhost.test", &["bob@example.net"], "retry");
    q.wait_log(&format!("{id}: removed"), 20);
    let log = q.log_text();
    let deferred = log.find("status=deferred (connection refused)").unwrap();
    let sent = log.find("status=sent (delivered)").unwrap();
    assert!(deferred < sent, "{log}");
    let outcomes: Vec<String> = s.deliveries().into_iter().map(|d| d.2).collect();
    assert_eq!(outcomes, ["defer", "ok"]);
}

#[test]
fn failure_is_bounced_as_multipart_report_and_bounces_never_bounce() {
    let decide = "def decide(qid, rcpt, sender, first):\n    if rcpt.endswith('@fail.test'):\n        return ('fail', '5.1.1', '550 5.1.1 no such user')\n    return ('ok', '2.0.0', 'delivered')\n";
    let s = Setup::new("qmgr-bounce", decide, &[]);
    let q = s.start();
    let id = s.inject(
        "alice@localhost.test",
        &["bob@fail.test", "ok@localhost.test"],
        "doomed",
    );
    q.wait_log(&format!("{id}: removed"), 20);
    let log = q.log_text();
    let bounce_id = log
        .lines()
        .find_map(|l| {
            l.split(&format!("{id}: sender non-delivery notification: "))
                .nth(1)
        })
        .unwrap_or_else(|| panic!("no bounce line:\n{log}"))
        .trim()
        .to_string();
    q.wait_log(&format!("{bounce_id}: removed"), 20);
    // The bounce went to the sender from <>, and parses as a multipart/report.
    assert_eq!(
        s.ok_counts()
            .get(&(bounce_id.clone(), "alice@localhost.test".into())),
        Some(&1)
    );
    let (ctype, out) = python_report(&s.saved(&bounce_id));
    assert_eq!(ctype, "multipart/report delivery-status", "{out}");
    assert!(out.contains("PART message/delivery-status"), "{out}");
    assert!(out.contains("PART text/rfc822-headers"), "{out}");
    assert!(
        out.contains("DS Final-Recipient: rfc822; bob@fail.test"),
        "{out}"
    );
    assert!(out.contains("DS Action: failed"), "{out}");
    assert!(out.contains("DS Status: 5.1.1"), "{out}");
    assert!(
        !out.contains("ok@localhost.test\n"),
        "only failures are reported: {out}"
    );

    // A failed message from <> is never bounced: it goes once to the postmaster, and
    // is dropped if that fails too. Same for a bounce whose own delivery fails.
    let null = s.inject("", &["x@fail.test"], "a bounce");
    let carol = s.inject("carol@fail.test", &["dave@fail.test"], "both fail");
    let to_pm = s.inject("", &["postmaster@fail.test"], "double bounce");
    for id in [&null, &carol, &to_pm] {
        q.wait_log(&format!("{id}: removed"), 20);
    }
    q.wait_log(
        &format!("{to_pm}: undeliverable message from <> dropped"),
        5,
    );
    let null_copy = after(
        &q.log_text(),
        &format!("{null}: undeliverable message from <> sent to <postmaster@localhost.test>: "),
    );
    q.wait_log(&format!("{null_copy}: removed"), 20);
    let carol_bounce = after(
        &q.log_text(),
        &format!("{carol}: sender non-delivery notification: "),
    );
    q.wait_log(&format!("{carol_bounce}: removed"), 20);
    let carol_copy = after(
        &q.log_text(),
        &format!(
            "{carol_bounce}: undeliverable message from <> sent to <postmaster@localhost.test>: "
        ),
    );
    q.wait_log(&format!("{carol_copy}: removed"), 20);
    let counts = s.ok_counts();
    for copy in [&null_copy, &carol_copy] {
        let key = (copy.clone(), "postmaster@localhost.test".to_string());
        assert_eq!(counts.get(&key), Some(&1));
    }
    let log = q.log_text();
    assert_eq!(
        log.matches("sender non-delivery notification").count(),
        2,
        "{}",
        tail(&log, 40)
    );
    assert_eq!(
        log.matches("sent to <postmaster@localhost.test>").count(),
        2
    );
    assert!(s.queue_empty());
}

/// The rest of the first log line containing `prefix`, after it (a queue ID).
fn after(log: &str, prefix: &str) -> String {
    log.lines()
        .find_map(|l| l.split(prefix).nth(1))
        .unwrap_or_else(|| panic!("no {prefix:?} in:\n{log}"))
        .trim()
        .to_string()
}

#[test]
fn crashing_garbage_and_hanging_workers_lose_no_recipient() {
    let decide = "def decide(qid, rcpt, sender, first):\n    if first and rcpt.startswith('crash2'):\n        return 'crash'\n    if first and rcpt.startswith('garbage'):\n        return 'garbage'\n    if first and rcpt.startswith('hang'):\n        return 'hang'\n    return ('ok', '2.0.0', 'delivered')\n";
    // The hanging worker costs one timeout; it is long enough that a fake worker (a
    // Python interpreter) starting on a loaded machine is not taken for a hang too,
    // which would deliver its recipient a second time.
    let s = Setup::new(
        "qmgr-crash",
        decide,
        &[("queue.delivery_timeout", "\"4s\"")],
    );
    let q = s.start();
    // The first recipient is delivered, then the worker dies mid-job.
    let crash = s.inject(
        "a@localhost.test",
        &["crash1@localhost.test", "crash2@localhost.test"],
        "crash",
    );
    let garbage = s.inject("a@localhost.test", &["garbage@example.org"], "garbage");
    let hang = s.inject("a@localhost.test", &["hang@example.com"], "hang");
    for id in [&crash, &garbage, &hang] {
        q.wait_log(&format!("{id}: removed"), 30);
    }
    let log = q.log_text();
    assert!(log.contains("delivery worker died"), "{log}");
    assert!(log.contains("delivery worker protocol error"), "{log}");
    assert!(log.contains("delivery timed out, worker killed"), "{log}");
    let counts = s.ok_counts();
    for (id, r) in [
        (&crash, "crash1@localhost.test"),
        (&crash, "crash2@localhost.test"),
        (&garbage, "garbage@example.org"),
        (&hang, "hang@example.com"),
    ] {
        assert_eq!(
            counts.get(&(id.clone(), r.to_string())),
            Some(&1),
            "{r}: {log}"
        );
    }
}

#[test]
fn operator_flush_and_hold_are_honoured() {
    let decide =
        "def decide(qid, rcpt, sender, first):\n    return ('defer', '4.2.2', 'mailbox full')\n";
    let s = Setup::new(
        "qmgr-operator",
        decide,
        &[
            ("queue.retry_min", "\"30s\""),
            ("queue.retry_max", "\"60s\""),
        ],
    );
    let q = s.start();
    let id = s.inject("a@localhost.test", &["b@localhost.test"], "deferred");
    let deferred = wait_until(Duration::from_secs(10), || {
        s.spool.path(QueueState::Deferred, &id).exists()
    });
    assert!(deferred, "{}", q.log_text());
    // The deferral was recorded before the move: the status log says so.
    let log = std::fs::read_to_string(sloop_common::spool::status::path(&s.spool, &id)).unwrap();
    assert!(log.contains(" 0 defer 4.2.2 mailbox full\n"), "{log:?}");
    // `sloop queue flush` semantics: deferred -> incoming, then a poke.
    s.spool
        .move_to(&id, QueueState::Deferred, QueueState::Incoming)
        .unwrap();
    s.spool.poke();
    let retried = wait_until(Duration::from_secs(10), || s.deliveries().len() == 2);
    assert!(retried, "flush did not retry at once:\n{}", q.log_text());
    // `sloop queue hold`: the qmgr leaves it alone.
    wait_until(Duration::from_secs(10), || {
        s.spool.path(QueueState::Deferred, &id).exists()
    });
    s.spool
        .move_to(&id, QueueState::Deferred, QueueState::Hold)
        .unwrap();
    s.spool.poke();
    // A later message goes through a whole attempt while the held one stays put.
    let later = s.inject("a@localhost.test", &["c@localhost.test"], "later");
    let done = wait_until(Duration::from_secs(10), || {
        s.spool.path(QueueState::Deferred, &later).exists()
    });
    assert!(done, "{}", q.log_text());
    assert!(s.spool.path(QueueState::Hold, &id).exists());
    let attempts_on_held = s.deliveries().iter().filter(|d| d.0 == id).count();
    assert_eq!(attempts_on_held, 2);
}

#[test]
fn message_deleted_during_delivery_is_dropped_not_recreated() {
    let decide = "def decide(qid, rcpt, sender, first):\n    while os.path.exists(os.path.join(BASE, 'state', 'hold-on')):\n        time.sleep(0.01)\n    return ('defer', '4.2.2', 'mailbox full')\n";
    let s = Setup::new("qmgr-delete", decide, &[]);
    let gate = s.dir.path.join("state/hold-on");
    std::fs::write(&gate, b"").unwrap();
    let q = s.start();
    let id = s.inject("a@localhost.test", &["b@localhost.test"], "doomed");
    let active = s.spool.path(QueueState::Active, &id);
    assert!(wait_until(Duration::from_secs(10), || active.exists()));
    // `sloop queue delete` while the worker holds the job: file and status log go.
    std::fs::remove_file(&active).unwrap();
    sloop_common::spool::status::remove(&s.spool, &id).unwrap();
    std::fs::remove_file(&gate).unwrap();
    q.wait_log(&format!("{id}: left active/ during delivery"), 10);
    assert!(s.spool.find(&id).is_none());
    assert!(!sloop_common::spool::status::path(&s.spool, &id).exists());
}

#[test]
fn reload_applies_the_new_config_and_replaces_the_workers() {
    let decide =
        "def decide(qid, rcpt, sender, first):\n    return ('defer', '4.3.0', 'old worker')\n";
    let s = Setup::new("qmgr-reload", decide, &[]);
    let q = s.start();
    let id = s.inject("a@localhost.test", &["b@example.net"], "reload");
    q.wait_log("status=deferred (old worker)", 10);
    // A new bin_dir whose worker delivers; the running workers must be replaced.
    let bin2 = s.dir.path.join("bin2");
    std::fs::create_dir_all(&bin2).unwrap();
    let old = std::fs::read_to_string(s.dir.path.join("bin/sloop-deliver")).unwrap();
    let new = old.replace(
        "('defer', '4.3.0', 'old worker')",
        "('ok', '2.0.0', 'new worker')",
    );
    std::fs::write(bin2.join("sloop-deliver"), new).unwrap();
    std::fs::set_permissions(
        bin2.join("sloop-deliver"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let bin2_value = format!("{:?}", bin2.display().to_string());
    s.dir.write_config(
        sloop_tests::free_port(),
        &[("server.bin_dir", bin2_value.as_str())],
        "",
    );
    q.signal(Signal::SIGHUP);
    q.wait_log("reloaded configuration", 10);
    q.wait_log(&format!("{id}: removed"), 20);
    assert!(q.log_text().contains("status=sent (new worker)"));
}

#[test]
fn invalid_config_exits_78() {
    let s = Setup::new("qmgr-badconf", ALL_OK, &[]);
    std::fs::write(&s.config, "[queue]\nmax_active = 0\n").unwrap();
    let mut q = s.start();
    assert_eq!(q.wait_exit(10), Some(78), "{}", q.log_text());
    assert!(
        q.log_text().contains("queue.max_active"),
        "{}",
        q.log_text()
    );
}

#[test]
fn queue_nice_lowers_the_priority_of_the_qmgr_and_its_workers_and_reload_changes_it() {
    let own = nice_of(std::process::id()).unwrap();
    let s = Setup::new("qmgr-nice", ALL_OK, &[("queue.nice", "3")]);
    let q = s.start();
    let qmgr = q.pid() as u32;
    // The live children of the queue manager (its workers) are all at `want`.
    let workers_at = |want: i32| {
        let live: Vec<i32> = children_of(qmgr)
            .into_iter()
            .filter_map(|(pid, _)| nice_of(pid))
            .collect();
        !live.is_empty() && live.iter().all(|n| *n == want)
    };
    let id = s.inject("a@localhost.test", &["b@example.net"], "nice");
    q.wait_log(&format!("{id}: removed"), 10);
    let want = (own + 3).min(19);
    assert_eq!(nice_of(qmgr), Some(want), "{}", q.log_text());
    assert!(workers_at(want), "workers: {:?}", children_of(qmgr));

    // A reload moves the queue manager, and the workers that replace the old ones.
    s.dir
        .write_config(sloop_tests::free_port(), &[("queue.nice", "6")], "");
    q.signal(Signal::SIGHUP);
    q.wait_log("reloaded configuration", 10);
    let want = (own + 6).min(19);
    assert_eq!(nice_of(qmgr), Some(want), "{}", q.log_text());
    let id = s.inject("a@localhost.test", &["b@example.net"], "nicer");
    q.wait_log(&format!("{id}: removed"), 10);
    assert!(
        wait_until(Duration::from_secs(10), || workers_at(want)),
        "workers still at the old priority: {:?}",
        children_of(qmgr)
    );
}
