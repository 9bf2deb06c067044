//! The supervisor's turn for overload: the busy acceptor, the overload file and its
//! signal to the workers, per-address fairness, and the status file for `sloop status`.
//!
//! At every turn of the loop: connections passed to workers but not taken come back;
//! held ones whose connect budget is nearly spent get `421 4.3.2`; while no worker is
//! idle (every one busy at the limit, or the pool still starting workers), new
//! connections are accepted and held, otherwise held ones are passed to idle workers. Then overload is updated (overload.rs): when it begins,
//! ends, or the set of addresses over their share changes, `<run_dir>/overload` is
//! rewritten (or removed) and every worker gets `SIGWINCH` (pool_proto.rs). Failing
//! to write a file is logged and the turn goes on: the acceptor still answers.

use super::Supervisor;
use crate::acceptor::{margin, Turn};
use crate::children;
use crate::overload::{self, Change};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use sloop_common::config::values::format_duration;
use sloop_common::pool_state::{self, Overload, PoolStatus, OVERLOAD_FILE, STATUS_FILE};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

/// How often the status file may be rewritten while the counts change.
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// How often connections passed down and not taken are taken back while workers are
/// idle (each one sent wakes every idle worker).
const RECLAIM_EVERY: Duration = Duration::from_millis(100);
/// How often the list of addresses over their share may be logged.
const SHARE_LOG_EVERY: Duration = Duration::from_secs(10);

impl Supervisor {
    /// One turn of overload handling (after status records, exits and spawns).
    pub fn balance(&mut self, now: Instant) {
        if self.stopping.is_some() {
            return;
        }
        let s = &self.cfg.smtpd;
        let saturated = self.pool.limit_reached(s.max_processes);
        let busy = self.busy_line();
        let mut turn = Turn::default();
        let idle = self.pool.counts().idle;
        // Taking back what no worker took (and sending it again) wakes every idle
        // worker: not more often than RECLAIM_EVERY, unless nobody could take it.
        if idle == 0
            || self
                .reclaimed
                .is_none_or(|t| now.duration_since(t) >= RECLAIM_EVERY)
        {
            self.acceptor.reclaim();
            self.reclaimed = Some(now);
        }
        if let Some(cutoff) = now.checked_sub(self.hold()) {
            self.acceptor.expire(cutoff, &busy, &mut turn);
        }
        // No idle worker (the pool may still be starting some): nobody takes new
        // connections from the backlog now, so the acceptor does and keeps the time.
        if idle == 0 {
            self.acceptor
                .accept_from(self.listeners.iter(), now, &busy, &mut turn);
        } else {
            let more = idle.saturating_sub(self.acceptor.in_flight());
            self.acceptor.hand_off(more, &self.over_share);
        }
        if let Some(ip) = turn.first_refused {
            log::warn!(
                "busy acceptor: {} connection(s) (first from [{ip}]) found no worker within \
                 smtpd.connect_timeout={}: 421 4.3.2 Service busy",
                turn.refused,
                format_duration(s.connect_timeout)
            );
        }
        match self.overload.update(now, pool_state::unix_now(), saturated) {
            Some(Change::Began) => self.overload_began(),
            Some(Change::Ended) => self.overload_ended(),
            None => {}
        }
        if self.overload.since().is_some() {
            self.share_fairly();
        }
        self.write_status(now);
    }

    /// When the next turn is due for overload's sake.
    pub(super) fn balance_due(&self) -> Option<Instant> {
        let held = self.acceptor.next_due(self.hold());
        let reclaim = (self.acceptor.in_flight() > 0)
            .then_some(self.reclaimed.map(|t| t + RECLAIM_EVERY))
            .flatten();
        let status = self.status_written.as_ref().map(|(t, _)| *t + STATUS_EVERY);
        [held, reclaim, self.overload.due(), status]
            .into_iter()
            .flatten()
            .min()
    }

    /// The listening descriptors the loop should watch: only while the acceptor takes
    /// connections (no worker idle).
    pub fn accept_fds(&self) -> Vec<RawFd> {
        if self.stopping.is_some() || self.pool.counts().idle > 0 {
            return Vec::new();
        }
        self.listeners.iter().map(|l| l.as_raw_fd()).collect()
    }

    /// At stop: every waiting connection gets the busy reply.
    pub(super) fn refuse_all_waiting(&mut self) {
        let busy = self.busy_line();
        let mut turn = Turn::default();
        self.acceptor.reclaim();
        self.acceptor.expire(Instant::now(), &busy, &mut turn);
    }

    /// How long a connection may wait for a worker.
    fn hold(&self) -> Duration {
        let t = self.cfg.smtpd.connect_timeout;
        t.saturating_sub(margin(t))
    }

    fn busy_line(&self) -> Vec<u8> {
        format!(
            "421 4.3.2 {} Service busy, try again later\r\n",
            self.cfg.server.hostname
        )
        .into_bytes()
    }

    fn overload_began(&mut self) {
        let s = &self.cfg.smtpd;
        log::warn!(
            "overload: process limit reached (smtpd.max_processes={}, all busy): sessions \
             waiting for a command now end after smtpd.overload_idle_timeout={}; new \
             connections wait at most {} for a worker, then get 421 4.3.2",
            s.max_processes,
            format_duration(s.overload_idle_timeout.min(s.idle_timeout)),
            format_duration(self.hold())
        );
        self.over_share.clear();
        self.publish_overload();
    }

    fn overload_ended(&mut self) {
        let c = self.pool.counts();
        log::info!(
            "overload ended: {} of {} sloop-smtpd workers busy; {} connection(s) got \
             421 4.3.2 since sloopd started",
            c.busy,
            self.cfg.smtpd.max_processes,
            self.acceptor.refused
        );
        self.over_share.clear();
        let path = self.cfg.server.run_dir.join(OVERLOAD_FILE);
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::error!("cannot remove {}: {e}", path.display());
            }
        }
        self.signal_workers();
    }

    /// Recomputes the addresses over their share; publishes a change.
    fn share_fairly(&mut self) {
        let waiting: Vec<_> = self.acceptor.waiting_ips().collect();
        let over = overload::over_share(
            &self.pool.busy_clients(),
            &waiting,
            self.cfg.smtpd.max_processes,
        );
        if over == self.over_share {
            return;
        }
        let now = Instant::now();
        let due = self
            .share_logged
            .is_none_or(|t| now.duration_since(t) >= SHARE_LOG_EVERY);
        if !over.is_empty() && due {
            self.share_logged = Some(now);
            let list: Vec<String> = over.iter().take(10).map(|ip| format!("[{ip}]")).collect();
            let more = match over.len().saturating_sub(10) {
                0 => String::new(),
                n => format!(" and {n} more"),
            };
            log::info!(
                "overload: {}{more} hold more than their share of the pool; their idle \
                 sessions are cut first",
                list.join(" ")
            );
        }
        self.over_share = over;
        self.publish_overload();
    }

    /// Writes the overload file and tells every worker to read it.
    fn publish_overload(&mut self) {
        let Some((_, since)) = self.overload.since() else {
            return;
        };
        let o = Overload {
            since,
            over_share: self.over_share.clone(),
        };
        let dir = &self.cfg.server.run_dir;
        if let Err(e) = pool_state::write_atomically(dir, OVERLOAD_FILE, &o.render()) {
            log::error!(
                "cannot write {}: {e}; workers keep their normal timeouts",
                dir.join(OVERLOAD_FILE).display()
            );
        }
        self.signal_workers();
    }

    fn signal_workers(&self) {
        for pid in self.pool.pids() {
            children::signal(Pid::from_raw(pid as i32), Signal::SIGWINCH);
        }
    }

    /// Rewrites the status file when it changed, at most once per [`STATUS_EVERY`]
    /// (at once when overload begins or ends).
    fn write_status(&mut self, now: Instant) {
        let c = self.pool.counts();
        let st = PoolStatus {
            pid: std::process::id(),
            updated: 0,
            busy: c.busy,
            idle: c.idle,
            starting: c.starting,
            retiring: c.retiring,
            limit: self.cfg.smtpd.max_processes,
            overload_since: self.overload.since().map(|(_, t)| t),
            waiting: self.acceptor.waiting(),
            refused_busy: self.acceptor.refused,
        };
        let key = st.render();
        let due = match &self.status_written {
            None => true,
            Some((t, old)) => {
                let flip = old.contains("overload_since=-") != key.contains("overload_since=-");
                *old != key && (flip || now.duration_since(*t) >= STATUS_EVERY)
            }
        };
        if !due {
            return;
        }
        let text = PoolStatus {
            updated: pool_state::unix_now(),
            ..st
        }
        .render();
        let dir = &self.cfg.server.run_dir;
        if let Err(e) = pool_state::write_atomically(dir, STATUS_FILE, &text) {
            log::debug!("cannot write {}: {e}", dir.join(STATUS_FILE).display());
        }
        self.status_written = Some((now, key));
    }
}
