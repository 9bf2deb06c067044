//! SIGKILL sloop-qmgr in the middle of a queue of 2,000 messages, restart it: every
//! message is delivered at least once (duplicates counted and printed), none missing
//! (ARCHITECTURE.md §3, invariant 3).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod qmgr_support;

use qmgr_support::{Setup, ALL_OK};
use sloop_common::spool::QueueState;
use sloop_tests::wait_until;
use std::collections::HashSet;
use std::time::{Duration, Instant};

const MESSAGES: usize = 2000;

#[test]
fn sigkill_with_2000_queued_loses_nothing() {
    let s = Setup::new("qmgr-kill", ALL_OK, &[("queue.local_concurrency", "2")]);
    let t0 = Instant::now();
    let ids: Vec<String> = (0..MESSAGES)
        .map(|i| s.inject("a@localhost.test", &["b@localhost.test"], &format!("m{i}")))
        .collect();
    eprintln!("injected {MESSAGES} in {:?}", t0.elapsed());
    let mut q = s.start();
    let some = wait_until(Duration::from_secs(60), || s.deliveries().len() >= 200);
    assert!(some, "{}", q.log_text());
    q.signal(nix::sys::signal::Signal::SIGKILL);
    q.wait_exit(10);
    let before = s.deliveries().len();
    assert!(
        before < MESSAGES,
        "killed too late to prove anything ({before} delivered)"
    );
    let in_active = s.count(QueueState::Active);
    eprintln!("killed after {before} deliveries, {in_active} messages left in active/");

    let q2 = s.start();
    s.wait_drained(&q2, 180);
    let d = s.deliveries();
    let distinct: HashSet<&str> = d.iter().map(|x| x.0.as_str()).collect();
    let missing = ids
        .iter()
        .filter(|id| !distinct.contains(id.as_str()))
        .count();
    let duplicates = d.len() - distinct.len();
    eprintln!("{MESSAGES} messages: {missing} missing, {duplicates} duplicate deliveries");
    assert_eq!(missing, 0);
    assert!(d.iter().all(|x| x.2 == "ok"));
    // Each duplicate comes from a job in flight at the kill: at most one per worker.
    assert!(duplicates <= 2, "{duplicates} duplicates");
    let status_left = std::fs::read_dir(s.spool.status_dir()).unwrap().count();
    assert_eq!(status_left, 0, "status logs left behind");
}
