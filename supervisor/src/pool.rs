//! Accounting of the smtpd prefork pool: which workers exist and whether each is
//! starting (no status record yet), idle or busy, and whether it is retiring (asked to
//! finish and exit after a reload).
//!
//! Pure data, fed by the event loop: [`Pool::add`] after a spawn, [`Pool::report`] for
//! each status record read from the pipe (pool_proto.rs), [`Pool::remove`] after a
//! reap. From that it answers how many workers to start ([`Pool::to_spawn`]): enough
//! that `min_idle` are idle or about to be, never more than `max_processes` in all, so
//! when every worker is busy the pool grows by itself. A record for a pid the pool does
//! not know (a worker already reaped, or a stray writer) is the peer's business, not an
//! inconsistency of ours: the caller logs and ignores it.

use sloop_common::pool_proto::Availability;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// What the supervisor knows about one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Started, no status record yet.
    Starting,
    Idle,
    Busy,
}

/// One worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Worker {
    pub state: WorkerState,
    /// Sent SIGHUP on reload: it will exit after its session and is not counted as
    /// available.
    pub retiring: bool,
    /// True once it has sent any status record.
    pub reported: bool,
    /// The client it serves (from its client record), while busy.
    pub client: Option<IpAddr>,
}

/// Counts for logs and decisions. Retiring workers count only in `total` and
/// `retiring`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: usize,
    pub starting: usize,
    pub idle: usize,
    pub busy: usize,
    pub retiring: usize,
}

/// The pool, keyed by pid.
#[derive(Debug, Default)]
pub struct Pool {
    workers: BTreeMap<u32, Worker>,
}

impl Pool {
    /// Records a freshly started worker.
    pub fn add(&mut self, pid: u32) {
        self.workers.insert(
            pid,
            Worker {
                state: WorkerState::Starting,
                retiring: false,
                reported: false,
                client: None,
            },
        );
    }

    /// Applies a status record; `false` when `pid` is not a worker of this pool.
    pub fn report(&mut self, pid: u32, availability: Availability) -> bool {
        let Some(w) = self.workers.get_mut(&pid) else {
            return false;
        };
        w.state = match availability {
            Availability::Idle => WorkerState::Idle,
            Availability::Busy => WorkerState::Busy,
        };
        w.client = None;
        w.reported = true;
        true
    }

    /// Applies a client record; `false` when `pid` is not a worker of this pool.
    pub fn report_client(&mut self, pid: u32, ip: IpAddr) -> bool {
        let Some(w) = self.workers.get_mut(&pid) else {
            return false;
        };
        w.client = Some(ip);
        true
    }

    /// The client of every busy worker that named one.
    pub fn busy_clients(&self) -> Vec<IpAddr> {
        self.workers
            .values()
            .filter(|w| w.state == WorkerState::Busy)
            .filter_map(|w| w.client)
            .collect()
    }

    /// Forgets a reaped worker; returns what was known about it.
    pub fn remove(&mut self, pid: u32) -> Option<Worker> {
        self.workers.remove(&pid)
    }

    /// True when `pid` is a worker of this pool.
    pub fn contains(&self, pid: u32) -> bool {
        self.workers.contains_key(&pid)
    }

    /// Marks every worker as retiring; returns the pids that were not already, so the
    /// caller can signal them.
    pub fn retire_all(&mut self) -> Vec<u32> {
        let mut out = Vec::new();
        for (pid, w) in self.workers.iter_mut() {
            if !w.retiring {
                w.retiring = true;
                out.push(*pid);
            }
        }
        out
    }

    /// Marks one worker as retiring; false when unknown or already retiring.
    pub fn retire(&mut self, pid: u32) -> bool {
        match self.workers.get_mut(&pid) {
            Some(w) if !w.retiring => {
                w.retiring = true;
                true
            }
            _ => false,
        }
    }

    /// Idle workers beyond `min_idle`, newest first: after a burst they would sit idle
    /// until `max_use`; the supervisor retires them once the surplus has lasted.
    pub fn surplus_idle(&self, min_idle: usize) -> Vec<u32> {
        let idle: Vec<u32> = self
            .workers
            .iter()
            .filter(|(_, w)| !w.retiring && w.state == WorkerState::Idle)
            .map(|(pid, _)| *pid)
            .collect();
        let surplus = idle.len().saturating_sub(min_idle);
        idle.into_iter().rev().take(surplus).collect()
    }

    /// Every worker's pid.
    pub fn pids(&self) -> Vec<u32> {
        self.workers.keys().copied().collect()
    }

    /// Current counts.
    pub fn counts(&self) -> Counts {
        let mut c = Counts {
            total: self.workers.len(),
            ..Counts::default()
        };
        for w in self.workers.values() {
            if w.retiring {
                c.retiring += 1;
                continue;
            }
            match w.state {
                WorkerState::Starting => c.starting += 1,
                WorkerState::Idle => c.idle += 1,
                WorkerState::Busy => c.busy += 1,
            }
        }
        c
    }

    /// How many workers to start now so that `min_idle` are idle or starting, without
    /// exceeding `max_processes` processes in all.
    pub fn to_spawn(&self, min_idle: usize, max_processes: usize) -> usize {
        let c = self.counts();
        let ready = c.idle + c.starting;
        let wanted = min_idle.saturating_sub(ready);
        let room = max_processes.saturating_sub(c.total);
        wanted.min(room)
    }

    /// True when the pool wants more workers but is at `max_processes` with none idle:
    /// new clients wait in the kernel's backlog.
    pub fn limit_reached(&self, max_processes: usize) -> bool {
        let c = self.counts();
        c.total >= max_processes && c.idle == 0 && c.starting == 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use Availability::{Busy, Idle};

    fn pool_of(pids: &[u32]) -> Pool {
        let mut p = Pool::default();
        for pid in pids {
            p.add(*pid);
        }
        p
    }

    #[test]
    fn an_empty_pool_starts_min_idle_workers() {
        let p = Pool::default();
        assert_eq!(p.to_spawn(4, 100), 4);
        assert_eq!(p.to_spawn(4, 3), 3);
    }

    #[test]
    fn starting_workers_count_as_ready_so_no_double_spawn() {
        let p = pool_of(&[10, 11]);
        assert_eq!(p.to_spawn(2, 100), 0);
        assert_eq!(p.counts().starting, 2);
    }

    #[test]
    fn busy_workers_make_the_pool_grow_up_to_the_limit() {
        let mut p = pool_of(&[10, 11]);
        assert!(p.report(10, Busy));
        assert!(p.report(11, Idle));
        assert_eq!(p.to_spawn(2, 100), 1);
        assert!(p.report(11, Busy));
        assert_eq!(p.to_spawn(2, 100), 2);
        assert_eq!(p.to_spawn(2, 3), 1);
        assert!(!p.limit_reached(3));
        p.add(12);
        p.report(12, Busy);
        assert_eq!(p.to_spawn(2, 3), 0);
        assert!(p.limit_reached(3));
    }

    #[test]
    fn a_worker_back_to_idle_stops_growth() {
        let mut p = pool_of(&[10, 11, 12]);
        for pid in [10, 11, 12] {
            p.report(pid, Busy);
        }
        p.report(11, Idle);
        p.report(12, Idle);
        assert_eq!(p.to_spawn(2, 100), 0);
        let c = p.counts();
        assert_eq!((c.idle, c.busy, c.total), (2, 1, 3));
    }

    #[test]
    fn a_busy_worker_names_its_client_until_idle() {
        let mut p = pool_of(&[10, 11]);
        let ip: IpAddr = "127.0.0.3".parse().unwrap();
        p.report(10, Busy);
        assert!(p.report_client(10, ip));
        assert!(!p.report_client(99, ip));
        p.report(11, Busy);
        assert_eq!(p.busy_clients(), vec![ip]);
        p.report(10, Idle);
        assert!(p.busy_clients().is_empty());
    }

    #[test]
    fn reaped_and_unknown_workers() {
        let mut p = pool_of(&[10]);
        assert!(!p.report(99, Idle), "a record from a stranger is refused");
        p.report(10, Idle);
        let w = p.remove(10).unwrap();
        assert!(w.reported);
        assert_eq!(p.remove(10), None);
        assert_eq!(p.to_spawn(1, 10), 1);
    }

    #[test]
    fn surplus_idle_workers_are_the_ones_beyond_min_idle() {
        let mut p = pool_of(&[10, 11, 12, 13]);
        for pid in [10, 11, 12] {
            p.report(pid, Idle);
        }
        p.report(13, Busy);
        assert_eq!(p.surplus_idle(2), vec![12]);
        assert_eq!(p.surplus_idle(3), Vec::<u32>::new());
        assert!(p.retire(12));
        assert!(!p.retire(12));
        assert!(!p.retire(99));
        assert_eq!(p.surplus_idle(2), Vec::<u32>::new());
        assert_eq!(p.to_spawn(2, 100), 0, "retiring the surplus spawns nothing");
    }

    #[test]
    fn retiring_workers_are_replaced_but_still_count_against_the_limit() {
        let mut p = pool_of(&[10, 11]);
        p.report(10, Idle);
        p.report(11, Busy);
        assert_eq!(p.retire_all(), vec![10, 11]);
        assert_eq!(p.retire_all(), Vec::<u32>::new());
        let c = p.counts();
        assert_eq!((c.total, c.retiring, c.idle, c.busy), (2, 2, 0, 0));
        assert_eq!(p.to_spawn(2, 100), 2);
        assert_eq!(p.to_spawn(2, 3), 1);
        p.report(10, Idle);
        assert_eq!(p.counts().idle, 0, "a retiring worker is never available");
    }
}
