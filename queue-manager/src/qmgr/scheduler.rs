//! Scheduling logic of the queue manager, with no I/O: how a message's pending
//! recipients are grouped into delivery jobs, which job runs next, and how long a
//! message or a destination waits before its next attempt.
//!
//! - **Grouping**: one job per (message, transport, nexthop), at most
//!   [`MAX_RCPTS_PER_JOB`] recipients each. A recipient is local when its domain is one
//!   of `domains.local` (any case); all local recipients of a message share one job
//!   (nexthop empty); remote ones are grouped by their domain (the nexthop).
//! - **Fairness**: every destination has its own FIFO of jobs; [`Scheduler::next`]
//!   serves the destinations round-robin, one job each per turn, so one huge domain
//!   cannot starve the others. Remote destinations run at most
//!   `queue.destination_concurrency` jobs at once; local ones are bounded by the pool.
//! - **Dead destinations**: a remote destination whose jobs end with every recipient
//!   deferred [`DEAD_AFTER`] times in a row is suspended for an exponential delay; while
//!   suspended its queued jobs come out of [`Scheduler::next`] as [`Next::Suspend`] so
//!   the caller defers them at once instead of hammering the destination per message.
//!
//! Nothing here can fail; the caller (mod.rs) owns the spool and the workers.

use sloop_common::delivery_proto::Transport;
use sloop_common::spool::QueueId;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Most recipients in one job.
pub const MAX_RCPTS_PER_JOB: usize = 50;
/// Consecutive all-deferred jobs after which a remote destination is suspended.
pub const DEAD_AFTER: u32 = 3;

/// Where a job goes: the transport and, for remote, the destination domain (lower case).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Dest {
    pub transport: Transport,
    pub domain: String,
}

/// One delivery job: some recipients (envelope indices) of one message to one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    pub msg: QueueId,
    pub dest: Dest,
    pub rcpts: Vec<usize>,
}

/// What the scheduler hands out next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Deliver this job now.
    Run(JobSpec),
    /// The destination is suspended: defer these recipients with the reason given.
    Suspend(JobSpec, String),
}

/// The domain of an address (after the last `@`), lower case; empty when there is none.
pub fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default()
}

/// Groups the `pending` recipients (indices into `addresses`) of message `msg` into jobs.
/// An address without a domain is local. Jobs come out in first-seen order.
pub fn group(
    msg: &QueueId,
    addresses: &[&str],
    pending: &[usize],
    is_local: impl Fn(&str) -> bool,
) -> Vec<JobSpec> {
    let mut jobs: Vec<JobSpec> = Vec::new();
    for &i in pending {
        let Some(addr) = addresses.get(i) else {
            continue;
        };
        let domain = domain_of(addr);
        let dest = if domain.is_empty() || is_local(&domain) {
            Dest {
                transport: Transport::Local,
                domain: String::new(),
            }
        } else {
            Dest {
                transport: Transport::Remote,
                domain,
            }
        };
        let open = jobs
            .iter_mut()
            .rev()
            .find(|j| j.dest == dest && j.rcpts.len() < MAX_RCPTS_PER_JOB);
        match open {
            Some(j) => j.rcpts.push(i),
            None => jobs.push(JobSpec {
                msg: *msg,
                dest,
                rcpts: vec![i],
            }),
        }
    }
    jobs
}

/// The delay before attempt number `attempts + 1`: `min * 2^(attempts-1)`, capped at `max`.
pub fn retry_delay(attempts: u32, min: Duration, max: Duration) -> Duration {
    let shift = attempts.saturating_sub(1).min(30);
    min.saturating_mul(1u32 << shift).min(max)
}

#[derive(Debug, Default)]
struct DestState {
    jobs: VecDeque<JobSpec>,
    running: usize,
    /// Consecutive jobs that ended with every recipient deferred.
    failures: u32,
    dead_until: Option<Instant>,
    last_error: String,
    in_ring: bool,
}

/// Per-destination job queues served round-robin, with the dead-destination cache.
#[derive(Debug)]
pub struct Scheduler {
    dests: HashMap<Dest, DestState>,
    ring: VecDeque<Dest>,
    dest_limit: usize,
    retry_min: Duration,
    retry_max: Duration,
    queued: usize,
}

impl Scheduler {
    pub fn new(dest_limit: usize, retry_min: Duration, retry_max: Duration) -> Scheduler {
        Scheduler {
            dests: HashMap::new(),
            ring: VecDeque::new(),
            dest_limit: dest_limit.max(1),
            retry_min,
            retry_max,
            queued: 0,
        }
    }

    /// Applies new limits after a config reload.
    pub fn set_limits(&mut self, dest_limit: usize, retry_min: Duration, retry_max: Duration) {
        self.dest_limit = dest_limit.max(1);
        self.retry_min = retry_min;
        self.retry_max = retry_max;
    }

    /// Jobs waiting (not running).
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Queues a job at the back of its destination's FIFO.
    pub fn push(&mut self, job: JobSpec) {
        let st = self.dests.entry(job.dest.clone()).or_default();
        if !st.in_ring {
            st.in_ring = true;
            self.ring.push_back(job.dest.clone());
        }
        st.jobs.push_back(job);
        self.queued += 1;
    }

    /// The next job to run or suspend, visiting destinations round-robin. `has_worker`
    /// says whether a worker of that transport can take a job now.
    pub fn next(&mut self, now: Instant, has_worker: impl Fn(Transport) -> bool) -> Option<Next> {
        for _ in 0..self.ring.len() {
            let dest = self.ring.pop_front()?;
            let limit = self.limit(&dest);
            let Some(st) = self.dests.get_mut(&dest) else {
                continue;
            };
            if st.jobs.is_empty() {
                st.in_ring = false;
                self.forget_if_idle(&dest);
                continue;
            }
            self.ring.push_back(dest.clone());
            let dead = st.dead_until.map(|t| t > now).unwrap_or(false);
            if dead {
                let job = st.jobs.pop_front()?;
                self.queued -= 1;
                let why = format!("delivery temporarily suspended: {}", st.last_error);
                return Some(Next::Suspend(job, why));
            }
            if st.running >= limit || !has_worker(dest.transport) {
                continue;
            }
            let job = st.jobs.pop_front()?;
            st.running += 1;
            self.queued -= 1;
            return Some(Next::Run(job));
        }
        None
    }

    /// Records the end of a job that ran. `all_deferred` carries the last deferral text
    /// when no recipient got a final answer. Returns the suspension delay when this
    /// made the destination dead.
    pub fn finished(
        &mut self,
        dest: &Dest,
        all_deferred: Option<&str>,
        now: Instant,
    ) -> Option<Duration> {
        let (min, max) = (self.retry_min, self.retry_max);
        let st = self.dests.get_mut(dest)?;
        st.running = st.running.saturating_sub(1);
        let mut suspended = None;
        match all_deferred {
            None => {
                st.failures = 0;
                st.dead_until = None;
            }
            Some(err) if dest.transport == Transport::Remote => {
                st.failures += 1;
                st.last_error = err.to_string();
                if st.failures >= DEAD_AFTER {
                    let d = retry_delay(st.failures + 1 - DEAD_AFTER, min, max);
                    st.dead_until = Some(now + d);
                    suspended = Some(d);
                }
            }
            Some(_) => {}
        }
        self.forget_if_idle(dest);
        suspended
    }

    /// Records the end of a job that says nothing about the destination's health (its
    /// worker crashed or could not be started).
    pub fn release(&mut self, dest: &Dest) {
        if let Some(st) = self.dests.get_mut(dest) {
            st.running = st.running.saturating_sub(1);
        }
        self.forget_if_idle(dest);
    }

    /// True while `dest` is suspended.
    #[cfg(test)]
    pub fn is_dead(&self, dest: &Dest, now: Instant) -> bool {
        self.dests
            .get(dest)
            .and_then(|s| s.dead_until)
            .map(|t| t > now)
            .unwrap_or(false)
    }

    fn limit(&self, dest: &Dest) -> usize {
        match dest.transport {
            Transport::Local => usize::MAX,
            Transport::Remote => self.dest_limit,
        }
    }

    /// Drops the state of a destination with nothing queued, running or remembered.
    fn forget_if_idle(&mut self, dest: &Dest) {
        let idle = self
            .dests
            .get(dest)
            .map(|s| s.jobs.is_empty() && s.running == 0 && !s.in_ring && s.failures == 0);
        if idle == Some(true) {
            self.dests.remove(dest);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn remote(d: &str) -> Dest {
        Dest {
            transport: Transport::Remote,
            domain: d.into(),
        }
    }

    fn job(d: &str) -> JobSpec {
        JobSpec {
            msg: QueueId::new(),
            dest: remote(d),
            rcpts: vec![0],
        }
    }

    #[test]
    fn grouping_by_transport_and_domain() {
        let addrs = [
            "a@Local.Test",
            "b@example.net",
            "c@EXAMPLE.net",
            "postmaster",
            "d@other.org",
            "e@local.test",
        ];
        let jobs = group(&QueueId::new(), &addrs, &[0, 1, 2, 3, 4, 5], |d| {
            d == "local.test"
        });
        assert_eq!(jobs.len(), 3);
        assert_eq!(jobs[0].dest.transport, Transport::Local);
        assert_eq!(jobs[0].rcpts, vec![0, 3, 5]);
        assert_eq!(jobs[1].dest, remote("example.net"));
        assert_eq!(jobs[1].rcpts, vec![1, 2]);
        assert_eq!(jobs[2].rcpts, vec![4]);
        // Only pending recipients are grouped.
        let jobs = group(&QueueId::new(), &addrs, &[4], |d| d == "local.test");
        assert_eq!(jobs.len(), 1);
    }

    #[test]
    fn big_recipient_lists_are_split() {
        let addrs: Vec<String> = (0..120).map(|i| format!("u{i}@x.org")).collect();
        let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
        let pending: Vec<usize> = (0..120).collect();
        let jobs = group(&QueueId::new(), &refs, &pending, |_| false);
        let sizes: Vec<usize> = jobs.iter().map(|j| j.rcpts.len()).collect();
        assert_eq!(sizes, vec![50, 50, 20]);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let (min, max) = (Duration::from_secs(60), Duration::from_secs(600));
        assert_eq!(retry_delay(0, min, max), min);
        assert_eq!(retry_delay(1, min, max), min);
        assert_eq!(retry_delay(2, min, max), Duration::from_secs(120));
        assert_eq!(retry_delay(4, min, max), Duration::from_secs(480));
        assert_eq!(retry_delay(5, min, max), max);
        assert_eq!(retry_delay(u32::MAX, min, max), max);
    }

    #[test]
    fn round_robin_does_not_starve_small_destinations() {
        let mut s = Scheduler::new(100, Duration::from_secs(1), Duration::from_secs(10));
        for _ in 0..1000 {
            s.push(job("big.example"));
        }
        let small = job("small.example");
        let small_id = small.msg;
        s.push(small);
        let now = Instant::now();
        let first: Vec<QueueId> = (0..2)
            .map(|_| match s.next(now, |_| true) {
                Some(Next::Run(j)) => j.msg,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(first.contains(&small_id), "{first:?}");
        assert_eq!(s.queued(), 999);
    }

    #[test]
    fn destination_concurrency_and_worker_availability_are_respected() {
        let mut s = Scheduler::new(2, Duration::from_secs(1), Duration::from_secs(10));
        for _ in 0..5 {
            s.push(job("a.example"));
        }
        let now = Instant::now();
        assert!(s.next(now, |_| false).is_none());
        assert!(matches!(s.next(now, |_| true), Some(Next::Run(_))));
        assert!(matches!(s.next(now, |_| true), Some(Next::Run(_))));
        assert!(
            s.next(now, |_| true).is_none(),
            "limit of 2 per destination"
        );
        assert_eq!(s.finished(&remote("a.example"), None, now), None);
        assert!(matches!(s.next(now, |_| true), Some(Next::Run(_))));
    }

    #[test]
    fn failing_destination_is_suspended_as_a_whole() {
        let mut s = Scheduler::new(10, Duration::from_secs(5), Duration::from_secs(60));
        let d = remote("dead.example");
        let now = Instant::now();
        for _ in 0..10 {
            s.push(job("dead.example"));
        }
        for _ in 0..DEAD_AFTER {
            assert!(matches!(s.next(now, |_| true), Some(Next::Run(_))));
        }
        assert_eq!(s.finished(&d, Some("connection refused"), now), None);
        assert_eq!(s.finished(&d, Some("connection refused"), now), None);
        let delay = s.finished(&d, Some("connection refused"), now);
        assert_eq!(delay, Some(Duration::from_secs(5)));
        assert!(s.is_dead(&d, now));
        // The 7 queued jobs come out suspended with the reason, none runs.
        for _ in 0..7 {
            match s.next(now, |_| true) {
                Some(Next::Suspend(_, why)) => assert!(why.contains("connection refused")),
                other => panic!("{other:?}"),
            }
        }
        assert!(s.next(now, |_| true).is_none());
        // After the delay the destination is tried again; one more failure doubles it.
        let later = now + Duration::from_secs(6);
        assert!(!s.is_dead(&d, later));
        s.push(job("dead.example"));
        assert!(matches!(s.next(later, |_| true), Some(Next::Run(_))));
        let delay = s.finished(&d, Some("refused"), later);
        assert_eq!(delay, Some(Duration::from_secs(10)));
        // A success revives it.
        s.push(job("dead.example"));
        let much_later = later + Duration::from_secs(11);
        assert!(matches!(s.next(much_later, |_| true), Some(Next::Run(_))));
        assert_eq!(s.finished(&d, None, much_later), None);
        assert!(!s.is_dead(&d, much_later));
    }

    #[test]
    fn local_deferrals_never_suspend() {
        let mut s = Scheduler::new(1, Duration::from_secs(5), Duration::from_secs(60));
        let d = Dest {
            transport: Transport::Local,
            domain: String::new(),
        };
        let now = Instant::now();
        for _ in 0..5 {
            s.push(JobSpec {
                msg: QueueId::new(),
                dest: d.clone(),
                rcpts: vec![0],
            });
            assert!(matches!(s.next(now, |_| true), Some(Next::Run(_))));
            assert_eq!(s.finished(&d, Some("mailbox busy"), now), None);
        }
        assert!(!s.is_dead(&d, now));
    }
}
