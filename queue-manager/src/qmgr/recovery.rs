//! Start-up recovery from the spool alone (docs/architecture.md §3, invariant 3).
//!
//! Before the queue manager schedules anything it: creates the layout where missing;
//! removes `tmp/` files whose writer is dead (or older than 36 hours); waits (up to
//! 10 s) for the delivery workers of a previous queue manager to exit, so that what
//! they delivered is in the status logs (spool/workers.rs); moves everything
//! left in `active/` back to `incoming/`, since work that was in flight when the last
//! queue manager died must be retried (the per-recipient status log keeps recipients
//! already delivered from being delivered again, so the worst case is one duplicate for
//! a delivery that happened but was not yet recorded); and deletes `status/<id>` logs
//! whose queue file is gone. Nothing here needs a human; an error that stops the spool
//! from being used at all (layout cannot be created or listed) is returned to the caller,
//! which exits with a temporary-failure status so `sloopd` restarts it with backoff.

use sloop_common::spool::{queue_id, status, workers, QueueState, Spool, SpoolError};
use std::time::Duration;

/// Age after which a `tmp/` file is removed even if its writer seems alive.
const TMP_MAX_AGE: Duration = Duration::from_secs(36 * 3600);
/// Longest wait for the delivery workers of a previous queue manager to finish.
const OLD_WORKERS_WAIT: Duration = Duration::from_secs(10);

/// What recovery did, for the start-up log line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub tmp_removed: usize,
    pub requeued: usize,
    pub orphans_removed: usize,
}

/// Runs every recovery step.
pub fn recover(spool: &Spool) -> Result<Recovered, SpoolError> {
    spool.ensure_layout()?;
    let tmp_removed = spool.clean_tmp(TMP_MAX_AGE)?;
    // Workers of a queue manager that died finish their jobs and record them first.
    // Not fatal: without the lock (a full disk cannot create it) the cost is a
    // possible duplicate, while refusing to start would stop all mail.
    match workers::wait_for_workers(spool, OLD_WORKERS_WAIT) {
        Ok(true) => {}
        Ok(false) => log::warn!(
            "delivery workers of the previous queue manager still run after {}s; \
             requeueing active/ anyway (their messages may be delivered twice)",
            OLD_WORKERS_WAIT.as_secs()
        ),
        Err(e) => log::warn!("{e}; not waiting for earlier delivery workers"),
    }
    let mut requeued = 0;
    for id in spool.list(QueueState::Active)? {
        match spool.move_to(&id, QueueState::Active, QueueState::Incoming) {
            Ok(()) => requeued += 1,
            Err(e) => log::warn!("{id}: cannot requeue from active: {e}"),
        }
    }
    let orphans_removed = remove_orphan_status(spool)?;
    Ok(Recovered {
        tmp_removed,
        requeued,
        orphans_removed,
    })
}

/// Deletes status logs with no queue file in any state.
fn remove_orphan_status(spool: &Spool) -> Result<usize, SpoolError> {
    let dir = spool.status_dir();
    let entries = std::fs::read_dir(&dir).map_err(|source| SpoolError {
        path: dir.clone(),
        action: "read directory",
        source,
    })?;
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !queue_id::is_valid(&name) || spool.find(&name).is_some() {
            continue;
        }
        match status::remove(spool, &name) {
            Ok(()) => removed += 1,
            Err(e) => log::warn!("{name}: cannot remove orphan status log: {e}"),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use sloop_common::spool::{commit, Envelope, Recipient};

    fn tempdir(name: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("sloop-qmgr-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        p
    }

    #[test]
    fn active_is_requeued_and_orphans_and_stale_tmp_are_removed() {
        let root = tempdir("recovery");
        let spool = Spool::new(&root);
        spool.ensure_layout().unwrap();
        let env = Envelope::new("a@x.org", vec![Recipient::new("b@y.org")]);
        let id = commit(&spool, &mut &b"Subject: t\r\n\r\nhi\r\n"[..], env, 0).unwrap();
        spool
            .move_to(&id, QueueState::Incoming, QueueState::Active)
            .unwrap();
        status::append(
            &spool,
            &id,
            &[status::result_line(0, status::Outcome::Defer, "4.0.0", "x")],
        )
        .unwrap();
        let orphan = queue_id::new_id();
        status::append(&spool, &orphan, &["1 0 ok 2.0.0 x".into()]).unwrap();
        // A tmp file from a pid that cannot exist.
        let dead_tmp = spool.tmp_dir().join("0000000000000FFFFFF000");
        std::fs::write(&dead_tmp, b"partial").unwrap();

        let r = recover(&spool).unwrap();
        assert_eq!(
            r,
            Recovered {
                tmp_removed: 1,
                requeued: 1,
                orphans_removed: 1
            }
        );
        assert!(spool.path(QueueState::Incoming, &id).exists());
        assert!(status::path(&spool, &id).exists(), "live status kept");
        assert!(!status::path(&spool, &orphan).exists());
        assert!(!dead_tmp.exists());
        let _ = std::fs::remove_dir_all(&root);
    }
}
