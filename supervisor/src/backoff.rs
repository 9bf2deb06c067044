//! Restart policy for one kind of child (the smtpd pool, the queue manager): how long
//! `sloopd` waits before starting another process of that kind after one exits.
//!
//! Pure accounting, no clock of its own: every call takes `now`, so the policy is unit
//! tested without sleeping. The rules (after Postfix `master_spawn.c`):
//!
//! - A clean exit of a child that served (status 0 after its first status record, e.g.
//!   a worker retiring after `smtpd.max_use` sessions) or the exit of a child we asked
//!   to stop (reload) is not a crash: the replacement starts at once and the crash
//!   streak is forgotten.
//! - An smtpd worker ended by its watchdog after it served (exit status
//!   `exitcode::SMTPD_WATCHDOG`) lost one stuck session, typically to a slow client: it
//!   is replaced at once and the streak is left as it was.
//! - A crash (non-zero status, killed by a signal, or a clean exit before it ever
//!   served) extends the streak, and the next start waits `restart_min * 2^(streak-1)`,
//!   capped at `restart_max`. A child that died before it ever served waits at least
//!   `startup_crash_pause`.
//! - Children started in the same round (a pool of workers that all crash at once)
//!   count as one step of the streak: each process remembers the streak it was
//!   started under, and its crash can only raise the streak to one more than that.
//! - A child that ran for at least [`Policy::stable`] before crashing resets the streak
//!   first, so an occasional crash after hours of service restarts quickly.

use std::time::{Duration, Instant};

/// The configured delays (from `[supervisor]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub restart_min: Duration,
    pub restart_max: Duration,
    pub startup_crash_pause: Duration,
}

impl Policy {
    /// From the validated `[supervisor]` section.
    pub fn from_config(s: &sloop_common::config::SupervisorConfig) -> Policy {
        Policy {
            restart_min: s.restart_min,
            restart_max: s.restart_max,
            startup_crash_pause: s.startup_crash_pause,
        }
    }

    /// How long a child must have run for its crash to start a fresh streak.
    pub fn stable(&self) -> Duration {
        self.restart_max.max(Duration::from_secs(10))
    }

    /// The delay after the `streak`-th crash in a row (`streak` >= 1).
    pub fn delay(&self, streak: u32, never_served: bool) -> Duration {
        let shift = streak.saturating_sub(1).min(31);
        let grown = self
            .restart_min
            .checked_mul(1u32 << shift)
            .unwrap_or(self.restart_max);
        let delay = grown.min(self.restart_max);
        if never_served {
            delay.max(self.startup_crash_pause)
        } else {
            delay
        }
    }
}

/// How a child's life ended, as far as the restart policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitClass {
    /// Exit status 0 after it served, or an exit we asked for.
    Expected,
    /// An smtpd worker ended by its watchdog after serving: one stuck session. Replaced
    /// at once; the crash streak neither grows nor resets.
    Watchdog,
    /// Anything else.
    Crash { never_served: bool },
}

/// The restart state of one kind of child.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    streak: u32,
    not_before: Option<Instant>,
}

impl Backoff {
    /// The streak a process started now is started under (remember it per process).
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// True when a process of this kind may be started at `now`.
    pub fn ready(&self, now: Instant) -> bool {
        match self.not_before {
            Some(t) => now >= t,
            None => true,
        }
    }

    /// When the next start is allowed, if it is delayed.
    pub fn not_before(&self) -> Option<Instant> {
        self.not_before
    }

    /// Records an exit; returns the delay before the next start of this kind.
    /// `spawn_streak` is [`Backoff::streak`] as it was when the process started.
    pub fn on_exit(
        &mut self,
        policy: &Policy,
        class: ExitClass,
        spawn_streak: u32,
        uptime: Duration,
        now: Instant,
    ) -> Duration {
        let never_served = match class {
            ExitClass::Expected => {
                self.streak = 0;
                return Duration::ZERO;
            }
            ExitClass::Watchdog => return Duration::ZERO,
            ExitClass::Crash { never_served } => never_served,
        };
        let base = if uptime >= policy.stable() {
            0
        } else {
            spawn_streak
        };
        if uptime >= policy.stable() {
            self.streak = 0;
        }
        self.streak = self.streak.max(base.saturating_add(1));
        let delay = policy.delay(self.streak, never_served);
        let until = now + delay;
        self.not_before = Some(self.not_before.map_or(until, |t| t.max(until)));
        delay
    }

    /// Records that a process could not even be started (e.g. its program is missing):
    /// counts as a crash before serving. Returns the delay before the next try.
    pub fn on_spawn_failure(&mut self, policy: &Policy, now: Instant) -> Duration {
        let streak = self.streak;
        self.on_exit(
            policy,
            ExitClass::Crash { never_served: true },
            streak,
            Duration::ZERO,
            now,
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn policy() -> Policy {
        Policy {
            restart_min: ms(100),
            restart_max: ms(1000),
            startup_crash_pause: ms(300),
        }
    }

    #[test]
    fn delays_double_up_to_the_maximum() {
        let p = policy();
        let got: Vec<_> = (1..=6).map(|s| p.delay(s, false)).collect();
        assert_eq!(
            got,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        assert_eq!(p.delay(u32::MAX, false), ms(1000));
    }

    #[test]
    fn a_child_that_never_served_waits_at_least_the_startup_pause() {
        let p = policy();
        assert_eq!(p.delay(1, true), ms(300));
        assert_eq!(p.delay(3, true), ms(400));
    }

    #[test]
    fn a_crash_loop_grows_and_blocks_starts_until_the_delay_passed() {
        let p = policy();
        let mut b = Backoff::default();
        let t0 = Instant::now();
        let crash = ExitClass::Crash {
            never_served: false,
        };
        let mut delays = Vec::new();
        for _ in 0..4 {
            let s = b.streak();
            delays.push(b.on_exit(&p, crash, s, ms(5), t0));
        }
        assert_eq!(delays, [ms(100), ms(200), ms(400), ms(800)]);
        assert!(!b.ready(t0 + ms(799)));
        assert!(b.ready(t0 + ms(800)));
    }

    #[test]
    fn workers_started_in_one_round_count_once() {
        let p = policy();
        let mut b = Backoff::default();
        let now = Instant::now();
        let crash = ExitClass::Crash {
            never_served: false,
        };
        let s = b.streak();
        assert_eq!(b.on_exit(&p, crash, s, ms(1), now), ms(100));
        assert_eq!(b.on_exit(&p, crash, s, ms(1), now), ms(100));
        assert_eq!(b.streak(), 1);
    }

    #[test]
    fn expected_exits_and_stable_runs_reset_the_streak() {
        let p = policy();
        let mut b = Backoff::default();
        let now = Instant::now();
        let crash = ExitClass::Crash {
            never_served: false,
        };
        for _ in 0..5 {
            let s = b.streak();
            b.on_exit(&p, crash, s, ms(1), now);
        }
        assert_eq!(b.streak(), 5);
        let s = b.streak();
        assert_eq!(b.on_exit(&p, crash, s, p.stable(), now), ms(100));
        assert_eq!(b.streak(), 1);
        assert_eq!(b.on_exit(&p, ExitClass::Expected, 1, ms(1), now), ms(0));
        assert_eq!(b.streak(), 0);
    }

    #[test]
    fn watchdog_exits_neither_delay_nor_count() {
        let p = policy();
        let mut b = Backoff::default();
        let now = Instant::now();
        for _ in 0..20 {
            assert_eq!(b.on_exit(&p, ExitClass::Watchdog, 0, ms(5), now), ms(0));
        }
        assert_eq!(b.streak(), 0);
        assert!(b.ready(now));
        let crash = ExitClass::Crash {
            never_served: false,
        };
        b.on_exit(&p, crash, 0, ms(5), now);
        b.on_exit(&p, ExitClass::Watchdog, 1, ms(5), now);
        assert_eq!(
            b.streak(),
            1,
            "a watchdog exit does not hide a crash streak"
        );
    }

    #[test]
    fn a_missing_program_backs_off_like_an_early_crash() {
        let p = policy();
        let mut b = Backoff::default();
        let now = Instant::now();
        assert_eq!(b.on_spawn_failure(&p, now), ms(300));
        assert_eq!(b.on_spawn_failure(&p, now), ms(300));
        assert_eq!(b.on_spawn_failure(&p, now), ms(400));
        assert_eq!(b.not_before(), Some(now + ms(400)));
    }
}
