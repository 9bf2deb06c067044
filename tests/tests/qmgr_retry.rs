//! sloop-qmgr retry policy end to end with fake workers: a failing destination is
//! suspended as a whole instead of being tried per message; a message past
//! `queue.max_lifetime` bounces (after one delay warning when `queue.delay_warning` is set).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod qmgr_support;

use qmgr_support::{python_report, Setup};

const DEAD: &str = "def decide(qid, rcpt, sender, first):\n    if rcpt.endswith('@dead.example'):\n        return ('defer', '4.4.1', 'connect to dead.example: connection refused')\n    return ('ok', '2.0.0', 'delivered')\n";

#[test]
fn failing_destination_is_suspended_not_hammered() {
    let s = Setup::new(
        "qmgr-dead",
        DEAD,
        &[
            ("queue.destination_concurrency", "1"),
            ("queue.retry_min", "\"20s\""),
            ("queue.retry_max", "\"40s\""),
        ],
    );
    let ids: Vec<String> = (0..10)
        .map(|i| s.inject("a@localhost.test", &["x@dead.example"], &format!("m{i}")))
        .collect();
    let alive = s.inject("a@localhost.test", &["y@alive.example"], "alive");
    let q = s.start();
    q.wait_log("dead.example: destination suspended for 20s", 20);
    q.wait_log(&format!("{alive}: removed"), 20);
    let ok = sloop_tests::wait_until(std::time::Duration::from_secs(20), || {
        s.count(sloop_common::spool::QueueState::Deferred) == 10
    });
    assert!(ok, "{}", q.log_text());
    // Three real attempts, then the other seven were deferred without a connection.
    let attempts = s
        .deliveries()
        .iter()
        .filter(|d| d.1 == "x@dead.example")
        .count();
    assert_eq!(attempts, 3, "{}", q.log_text());
    let log = q.log_text();
    let suspended = log
        .matches("status=deferred (delivery temporarily suspended: connect to dead.example")
        .count();
    assert_eq!(suspended, 7, "{log}");
    assert_eq!(ids.len(), 10);
}

#[test]
fn expired_message_bounces_after_one_delay_warning() {
    let decide = "def decide(qid, rcpt, sender, first):\n    if rcpt.endswith('@slow.example'):\n        return ('defer', '4.2.1', '421 4.2.1 busy, try later')\n    return ('ok', '2.0.0', 'delivered')\n";
    let s = Setup::new(
        "qmgr-expire",
        decide,
        &[
            ("queue.delay_warning", "\"1s\""),
            ("queue.max_lifetime", "\"3s\""),
            ("queue.retry_min", "\"500ms\""),
            ("queue.retry_max", "\"1s\""),
        ],
    );
    let q = s.start();
    let id = s.inject("alice@localhost.test", &["bob@slow.example"], "slow");
    q.wait_log(&format!("{id}: removed"), 30);
    let log = q.log_text();
    let grab = |what: &str| -> String {
        let needle = format!("{id}: sender {what} notification: ");
        let found: Vec<&str> = log
            .lines()
            .filter_map(|l| l.split(&needle).nth(1))
            .collect();
        assert_eq!(found.len(), 1, "{what}: {log}");
        found[0].trim().to_string()
    };
    let warning = grab("delay");
    let bounce = grab("non-delivery");
    assert!(
        log.contains("dsn=4.4.7, status=expired, returned to sender"),
        "{log}"
    );
    q.wait_log(&format!("{bounce}: removed"), 20);
    q.wait_log(&format!("{warning}: removed"), 20);
    let (_, w) = python_report(&s.saved(&warning));
    assert!(
        w.contains("DS Action: delayed") && w.contains("DS Status: 4.2.1"),
        "{w}"
    );
    let (ctype, b) = python_report(&s.saved(&bounce));
    assert_eq!(ctype, "multipart/report delivery-status");
    assert!(
        b.contains("DS Action: failed") && b.contains("DS Status: 5.4.7"),
        "{b}"
    );
    assert!(b.contains("message expired"), "{b}");
}

#[test]
fn missing_delivery_agent_defers_and_the_qmgr_carries_on() {
    use sloop_common::spool::QueueState;
    let s = Setup::new("qmgr-noagent", qmgr_support::ALL_OK, &[]);
    let agent = s.dir.path.join("bin/sloop-deliver");
    let aside = s.dir.path.join("bin/aside");
    std::fs::rename(&agent, &aside).unwrap();
    let q = s.start();
    let id = s.inject("a@localhost.test", &["b@localhost.test"], "no agent");
    let deferred = sloop_tests::wait_until(std::time::Duration::from_secs(10), || {
        s.spool.path(QueueState::Deferred, &id).exists()
    });
    assert!(deferred, "{}", q.log_text());
    assert!(q.log_text().contains("delivery agent unavailable"));
    // The agent is back and the operator flushes: delivered.
    std::fs::rename(&aside, &agent).unwrap();
    s.spool
        .move_to(&id, QueueState::Deferred, QueueState::Incoming)
        .unwrap();
    s.spool.poke();
    q.wait_log(&format!("{id}: removed"), 20);
}

#[test]
fn notify_never_means_no_bounce_and_ret_full_returns_the_message() {
    use sloop_common::spool::{commit, Envelope, Recipient, Ret};
    let decide = "def decide(qid, rcpt, sender, first):\n    return ('fail', '5.1.1', '550 5.1.1 unknown')\n";
    let s = Setup::new("qmgr-notify", decide, &[]);
    let q = s.start();
    let mut quiet = Recipient::new("x@remote.example");
    quiet.notify = Some("NEVER".into());
    let env = Envelope::new("alice@localhost.test", vec![quiet]);
    let msg = b"Subject: quiet\r\n\r\nbody\r\n";
    let quiet_id = commit(&s.spool, &mut &msg[..], env, 0).unwrap();
    q.wait_log(&format!("{quiet_id}: removed"), 20);
    assert!(q
        .log_text()
        .contains(&format!("{quiet_id}: no notification requested")));

    let mut full = Envelope::new(
        "bob@localhost.test",
        vec![Recipient::new("y@remote.example")],
    );
    full.ret = Some(Ret::Full);
    let msg = b"Subject: full\r\n\r\nthe whole body comes back\r\n";
    let full_id = commit(&s.spool, &mut &msg[..], full, 0).unwrap();
    q.wait_log(&format!("{full_id}: removed"), 20);
    let needle = format!("{full_id}: sender non-delivery notification: ");
    let log = q.log_text();
    let bounce = log
        .lines()
        .find_map(|l| l.split(&needle).nth(1))
        .unwrap_or_else(|| panic!("{log}"))
        .trim()
        .to_string();
    // The bounce itself fails too (the fake worker fails everything) and, being from
    // <>, goes to the postmaster; wait for it to be saved by the worker.
    let saved = s.saved(&bounce);
    assert!(sloop_tests::wait_until(
        std::time::Duration::from_secs(10),
        || saved.exists()
    ));
    let (ctype, out) = python_report(&saved);
    assert_eq!(ctype, "multipart/report delivery-status");
    assert!(out.contains("PART message/rfc822"), "{out}");
    let text = std::fs::read_to_string(&saved).unwrap();
    assert!(text.contains("the whole body comes back"));
}
