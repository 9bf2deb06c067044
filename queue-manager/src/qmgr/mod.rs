//! The queue manager (`sloop-qmgr`): owns the queue, schedules deliveries to pools of
//! `sloop-deliver` workers, records per-recipient results, retries with backoff and
//! bounces (docs/architecture.md, "The queue manager").
//!
//! Built like the smtpd: an I/O-free core (core.rs) takes events and returns effects;
//! this shell owns the clock, the spool executor (`sloop_common::spool::writer`), the
//! scheduler (scheduler.rs) and the workers (workers.rs, dispatch.rs), turns what
//! happens into events, and carries out the effects. One process under `sloopd`, one
//! mio loop (events.rs). At start-up it recovers the spool (recovery.rs); then it moves
//! messages `incoming/` -> `active/` as slots free in the bounded active set
//! (`queue.max_active`; only envelopes and status are held, never bodies), loads them
//! (messages.rs), runs their jobs on workers, and at the end of each loop turn writes
//! the turn's results together and lets the core decide the fate of the messages
//! whose jobs are over (settle.rs).
//!
//! Operator tools change the spool only by renames plus a poke on the trigger FIFO, so a
//! message that vanished from `active/` while its job ran is simply dropped from memory.
//! A message is never removed unless every recipient is final (recorded in its status
//! log, or all delivered so that the removal is the record) and any bounce is committed.

pub(crate) mod bounce;
mod core;
mod dispatch;
mod events;
mod messages;
mod recovery;
mod scheduler;
mod settle;
mod workers;

use self::core::{Core, Policy};
use mio::Registry;
use scheduler::Scheduler;
use sloop_common::config::{resolve_path, Config};
use sloop_common::exitcode;
use sloop_common::priority::Priority;
use sloop_common::spool::writer::Writer;
use sloop_common::spool::{QueueId, QueueState, Spool};
use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};
use workers::Pools;

/// Most messages moved into the active set per loop turn, so events stay served.
const LOADS_PER_TURN: usize = 256;
/// Longest wait for running jobs after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Runs the queue manager with the config at `-c` (or `SLOOP_CONFIG`, or the default);
/// returns the process exit code.
pub fn run(config: Option<&Path>) -> i32 {
    let path = resolve_path(config);
    let cfg = match Config::load_inherited(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sloop-qmgr: {e}");
            return exitcode::EX_CONFIG;
        }
    };
    sloop_common::logging::init_with("sloop-qmgr", "qmgr", &cfg.log);
    // Before any worker or thread starts, so that they inherit it.
    let priority = Priority::start(cfg.queue.nice);
    let spool = Spool::new(&cfg.server.spool_dir);
    match recovery::recover(&spool) {
        Ok(r) => log::info!(
            "started: spool {}, requeued {} from active, removed {} stale tmp files and {} orphan status logs",
            spool.root().display(),
            r.requeued,
            r.tmp_removed,
            r.orphans_removed
        ),
        Err(e) => {
            log::error!("spool recovery failed: {e}");
            return exitcode::EX_TEMPFAIL;
        }
    }
    match events::run(cfg, spool, priority) {
        Ok(()) => {
            log::info!("stopped");
            exitcode::EX_OK
        }
        Err(e) => {
            log::error!("fatal: {e}");
            exitcode::EX_TEMPFAIL
        }
    }
}

/// Everything the queue manager knows at run time.
pub(crate) struct Qmgr {
    cfg: Config,
    /// The decisions and the active set (messages in `active/` being worked on).
    core: Core,
    /// Every change to the spool goes through it.
    writer: Writer,
    registry: Registry,
    sched: Scheduler,
    pools: Pools,
    /// IDs listed in `incoming/`, oldest first, not yet loaded.
    incoming: VecDeque<QueueId>,
    /// IDs in `deferred/` whose time has come, not yet loaded.
    deferred: VecDeque<QueueId>,
    /// The trigger was poked since `incoming/` was last listed.
    poked: bool,
    next_scan: Instant,
    next_deferred_scan: Instant,
    next_job_id: u64,
    /// The delivery agent's path, found once (it reads /proc/self/exe).
    deliver_program: std::path::PathBuf,
    /// Alternates loads between `incoming/` and due `deferred/` messages.
    prefer_deferred: bool,
    /// The CPU priority `queue.nice` set at start, changed on reload.
    priority: Priority,
    stopping: Option<Instant>,
}

impl Qmgr {
    fn new(cfg: Config, spool: Spool, registry: Registry, priority: Priority) -> Qmgr {
        let q = &cfg.queue;
        let sched = Scheduler::new(q.destination_concurrency, q.retry_min, q.retry_max);
        let pools = Pools::new(q.local_concurrency, q.remote_concurrency);
        let now = Instant::now();
        let deliver_program = cfg.program("sloop-deliver");
        Qmgr {
            deliver_program,
            core: Core::new(Policy::from_config(&cfg)),
            cfg,
            writer: Writer::new(spool),
            registry,
            sched,
            pools,
            incoming: VecDeque::new(),
            deferred: VecDeque::new(),
            poked: true,
            next_scan: now,
            next_deferred_scan: now,
            next_job_id: 1,
            prefer_deferred: false,
            priority,
            stopping: None,
        }
    }

    /// SIGHUP: re-reads the config; an invalid one changes nothing.
    fn reload(&mut self) {
        match Config::load(&self.cfg.file) {
            Ok(cfg) => {
                let q = &cfg.queue;
                self.sched
                    .set_limits(q.destination_concurrency, q.retry_min, q.retry_max);
                self.pools
                    .set_limits(q.local_concurrency, q.remote_concurrency);
                // Before the workers are replaced, so that the new ones inherit it.
                self.priority.apply(q.nice);
                self.pools.retire_all();
                self.deliver_program = cfg.program("sloop-deliver");
                self.core.set_policy(Policy::from_config(&cfg));
                self.cfg = cfg;
                self.poked = true;
                log::info!("reloaded configuration {}", self.cfg.file.display());
            }
            Err(e) => log::error!("reload refused, keeping the running configuration: {e}"),
        }
    }

    /// SIGTERM: stop starting work; running jobs get [`STOP_GRACE`] to finish.
    fn begin_stop(&mut self) {
        if self.stopping.is_none() {
            log::info!("stopping: waiting for running deliveries");
            let grace = STOP_GRACE.min(self.cfg.queue.delivery_timeout);
            self.stopping = Some(Instant::now() + grace);
        }
    }

    /// How long the loop may sleep.
    fn timeout(&self, now: Instant) -> Duration {
        let room = self.core.len() < self.cfg.queue.max_active;
        if room && (!self.incoming.is_empty() || !self.deferred.is_empty()) {
            return Duration::ZERO;
        }
        let mut due = self.next_scan;
        if room {
            // With the active set full, a due deferred scan waits for a free slot (a
            // worker event wakes us); counting it here would spin.
            due = due.min(self.next_deferred_scan);
        }
        if let (Some(t), _) = self.pools.deadlines(now) {
            due = due.min(t);
        }
        if let Some(t) = self.pools.spawn_pause() {
            if t > now && self.sched.queued() > 0 {
                due = due.min(t);
            }
        }
        if let Some(t) = self.stopping {
            // No scans while stopping: only the grace period and job deadlines count.
            due = self.pools.deadlines(now).0.map_or(t, |d| d.min(t));
        }
        due.saturating_duration_since(now)
    }

    /// One turn of work after the events: scan, load, dispatch.
    fn tick(&mut self, now: Instant) {
        self.scan(now);
        self.fill_active();
        self.dispatch(now);
    }

    /// Lists `incoming/` when its backlog is empty and something may be new, and
    /// `deferred/` when a deferred message may be due.
    fn scan(&mut self, now: Instant) {
        let room = self.core.len() < self.cfg.queue.max_active;
        if now >= self.next_scan {
            self.poked = true;
            self.next_scan = now + self.cfg.queue.scan_interval;
        }
        if room && self.poked && self.incoming.is_empty() {
            self.poked = false;
            match self.writer.spool().list(QueueState::Incoming) {
                Ok(ids) => {
                    let cap = self.backlog_cap();
                    // More than we keep: list again as soon as this backlog is loaded.
                    self.poked = ids.len() > cap;
                    let ids = ids.iter().filter_map(|i| QueueId::parse(i));
                    self.incoming.extend(ids.take(cap));
                }
                Err(e) => log::error!("cannot scan incoming: {e}"),
            }
        }
        if room && now >= self.next_deferred_scan && self.deferred.is_empty() {
            self.scan_deferred(now);
        }
    }

    /// Most IDs remembered from one directory listing.
    fn backlog_cap(&self) -> usize {
        self.cfg.queue.max_active.max(1000)
    }

    /// Queues the due messages of `deferred/` and plans the next scan for the earliest
    /// one not yet due.
    fn scan_deferred(&mut self, now: Instant) {
        let mut next = now + self.cfg.queue.scan_interval;
        let ids = match self.writer.spool().list(QueueState::Deferred) {
            Ok(ids) => ids,
            Err(e) => {
                log::error!("cannot scan deferred: {e}");
                self.next_deferred_scan = next;
                return;
            }
        };
        let wall = SystemTime::now();
        for id in ids.iter().filter_map(|i| QueueId::parse(i)) {
            let path = self.writer.spool().path(QueueState::Deferred, id.as_str());
            let Ok(due) = std::fs::metadata(&path).and_then(|m| m.modified()) else {
                continue;
            };
            match due.duration_since(wall) {
                Ok(wait) if !wait.is_zero() => next = next.min(now + wait),
                _ if self.deferred.len() < self.backlog_cap() => self.deferred.push_back(id),
                // Due but beyond the cap: scan again once this backlog is loaded.
                _ => {
                    next = now;
                    break;
                }
            }
        }
        self.next_deferred_scan = next;
    }

    /// Plans a deferred scan no later than `when` (a message was just deferred).
    fn wake_deferred_at(&mut self, when: Instant) {
        self.next_deferred_scan = self.next_deferred_scan.min(when);
    }

    /// Moves messages into the active set while there is room, alternating between new
    /// and due deferred ones so neither starves.
    fn fill_active(&mut self) {
        for _ in 0..LOADS_PER_TURN {
            if self.core.len() >= self.cfg.queue.max_active {
                return;
            }
            self.prefer_deferred = !self.prefer_deferred;
            let from_deferred =
                !self.deferred.is_empty() && (self.incoming.is_empty() || self.prefer_deferred);
            let next = if from_deferred {
                self.deferred
                    .pop_front()
                    .map(|id| (QueueState::Deferred, id))
            } else {
                self.incoming
                    .pop_front()
                    .map(|id| (QueueState::Incoming, id))
            };
            let Some((state, id)) = next else {
                return;
            };
            self.load(state, id);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use self::core::Event;
    use super::*;
    use sloop_common::spool::status::MessageStatus;
    use sloop_common::spool::{Envelope, Recipient};

    fn qmgr(max_active: usize) -> (Qmgr, mio::Poll) {
        let text = format!("[queue]\nmax_active = {max_active}\n");
        let cfg = Config::parse(Path::new("test.toml"), &text).unwrap();
        let poll = mio::Poll::new().unwrap();
        let registry = poll.registry().try_clone().unwrap();
        let priority = Priority::at(0);
        (
            Qmgr::new(cfg, Spool::new("/nonexistent"), registry, priority),
            poll,
        )
    }

    /// Puts one message with one pending recipient into the active set.
    fn activate(q: &mut Qmgr) -> QueueId {
        let id = QueueId::new();
        let env = Envelope::new("a@example.org", vec![Recipient::new("b@example.net")]);
        let status = MessageStatus {
            recipients: vec![None],
            ..Default::default()
        };
        q.core.handle(Event::Loaded { id, env, status });
        id
    }

    #[test]
    fn the_loop_sleeps_until_the_next_event_and_never_spins() {
        let (mut q, _poll) = qmgr(1);
        let now = Instant::now();
        q.next_scan = now + Duration::from_secs(60);
        q.next_deferred_scan = now;
        assert_eq!(
            q.timeout(now),
            Duration::ZERO,
            "a due deferred scan runs now"
        );
        // Regression: with the active set full, a due deferred scan made poll spin.
        let a = activate(&mut q);
        assert!(q.timeout(now) >= Duration::from_secs(59));
        q.incoming.push_back(QueueId::new());
        assert!(
            q.timeout(now) >= Duration::from_secs(59),
            "no room, no load"
        );
        q.core.handle(Event::Vanished {
            id: a,
            deleted: false,
        });
        assert_eq!(
            q.timeout(now),
            Duration::ZERO,
            "room and a backlog: load now"
        );
        // While stopping only the grace period counts, not the overdue scans.
        q.incoming.clear();
        activate(&mut q);
        q.next_scan = now;
        q.begin_stop();
        let t = q.timeout(now);
        assert!(t > Duration::from_secs(1) && t <= STOP_GRACE * 2, "{t:?}");
    }
}
