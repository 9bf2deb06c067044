//! A large queue drains completely with bounded memory: 5,000 messages by default
//! (`queue.max_active` 500), 100,000 with `SLOOP_HEAVY=1` (the default `max_active`,
//! 5,000), so the active set, not the queue, bounds memory.
//! Prints the queue manager's peak RSS (VmHWM from /proc/<pid>/status, read just before
//! it is stopped) and the drain rate.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod qmgr_support;

use qmgr_support::{Setup, ALL_OK};
use std::collections::HashSet;
use std::time::Instant;

#[test]
fn large_queue_drains_with_bounded_memory() {
    let heavy = std::env::var("SLOOP_HEAVY")
        .map(|v| v == "1")
        .unwrap_or(false);
    let n = if heavy { 100_000 } else { 5_000 };
    // The periodic scan is pushed out of the way: the qmgr must relist incoming/ by
    // itself each time its bounded backlog is loaded. The default run also shrinks the
    // active set so that happens several times.
    let max_active = if heavy { "5000" } else { "500" };
    let s = Setup::new(
        "qmgr-drain",
        ALL_OK,
        &[
            ("log.level", "\"warn\""),
            ("queue.scan_interval", "\"1h\""),
            ("queue.max_active", max_active),
        ],
    );
    let t0 = Instant::now();
    // Half local, half spread over remote domains, to exercise both pools.
    let ids: Vec<String> = (0..n)
        .map(|i| {
            let rcpt = if i % 2 == 0 {
                "u@localhost.test".to_string()
            } else {
                format!("u@d{}.example", i % 7)
            };
            s.inject("a@localhost.test", &[rcpt.as_str()], &format!("m{i}"))
        })
        .collect();
    eprintln!("injected {n} in {:?}", t0.elapsed());
    let mut q = s.start();
    let t1 = Instant::now();
    s.wait_drained(&q, if heavy { 3600 } else { 300 });
    let secs = t1.elapsed().as_secs_f64();
    let peak = q.peak_rss_kib().unwrap_or(0);
    q.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(q.wait_exit(20), Some(0));
    let d = s.deliveries();
    let distinct: HashSet<&str> = d.iter().map(|x| x.0.as_str()).collect();
    assert!(ids.iter().all(|id| distinct.contains(id.as_str())));
    eprintln!(
        "drained {n} messages in {secs:.1}s ({:.0}/s); sloop-qmgr peak RSS (VmHWM) {peak} KiB",
        n as f64 / secs
    );
    assert!(peak > 0, "VmHWM not readable");
    assert!(peak < 256 * 1024, "peak RSS {peak} KiB");
}
