//! When the smtpd pool is overloaded, and which client addresses hold more than their
//! share of it (pure; the supervisor feeds it the pool's counts at every turn).
//!
//! Overload begins as soon as every worker is busy at `smtpd.max_processes` (none idle,
//! none starting) and ends once that has not been so for [`END_GRACE`], so a worker
//! that is idle for an instant between two sessions does not end it. During overload,
//! each client address's fair share is the pool's size divided by the number of
//! addresses that hold a worker or wait for one (and never less than one); an address
//! holding more busy workers than that is "over share", and its sessions waiting for a command are cut first
//! (pool_state.rs).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long the pool must have had room before overload ends.
pub const END_GRACE: Duration = Duration::from_secs(1);

/// What changed in one update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Began,
    Ended,
}

/// The overload state.
#[derive(Debug, Default)]
pub struct Tracker {
    /// Since when (monotonic, and unix seconds for the files) overload lasts.
    since: Option<(Instant, u64)>,
    /// Since when the pool has had room, during overload.
    room_since: Option<Instant>,
}

impl Tracker {
    /// Applies the pool's state now: `saturated` when every worker is busy at the
    /// limit.
    pub fn update(&mut self, now: Instant, unix_now: u64, saturated: bool) -> Option<Change> {
        match (self.since, saturated) {
            (None, true) => {
                self.since = Some((now, unix_now));
                self.room_since = None;
                Some(Change::Began)
            }
            (None, false) => None,
            (Some(_), true) => {
                self.room_since = None;
                None
            }
            (Some(_), false) => {
                let room = *self.room_since.get_or_insert(now);
                if now.duration_since(room) >= END_GRACE {
                    self.since = None;
                    self.room_since = None;
                    Some(Change::Ended)
                } else {
                    None
                }
            }
        }
    }

    /// Since when the pool is overloaded.
    pub fn since(&self) -> Option<(Instant, u64)> {
        self.since
    }

    /// When overload may end, if it is waiting to.
    pub fn due(&self) -> Option<Instant> {
        self.room_since.map(|t| t + END_GRACE)
    }
}

/// The addresses holding more than their share of `limit` workers. `busy` has one
/// entry per busy worker whose client is known; `waiting` one per connection waiting
/// for a worker. Sorted, without duplicates.
pub fn over_share(busy: &[IpAddr], waiting: &[IpAddr], limit: usize) -> Vec<IpAddr> {
    let mut held: BTreeMap<IpAddr, usize> = BTreeMap::new();
    for ip in busy {
        *held.entry(*ip).or_default() += 1;
    }
    let mut addresses = held.len();
    for ip in waiting {
        if !held.contains_key(ip) {
            held.insert(*ip, 0);
            addresses += 1;
        }
    }
    if addresses == 0 {
        return Vec::new();
    }
    // count > limit / addresses, in integers; one worker is never more than a share.
    held.into_iter()
        .filter(|(_, n)| *n > 1 && n * addresses > limit)
        .map(|(ip, _)| ip)
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn overload_begins_at_once_and_ends_after_the_grace() {
        let mut t = Tracker::default();
        let t0 = Instant::now();
        assert_eq!(t.update(t0, 100, false), None);
        assert_eq!(t.update(t0, 100, true), Some(Change::Began));
        assert_eq!(t.since(), Some((t0, 100)));
        let blink = t0 + Duration::from_millis(10);
        assert_eq!(t.update(blink, 100, false), None, "an idle instant");
        assert_eq!(t.due(), Some(blink + END_GRACE));
        assert_eq!(t.update(blink + Duration::from_millis(5), 100, true), None);
        assert_eq!(t.due(), None);
        let calm = t0 + Duration::from_secs(2);
        assert_eq!(t.update(calm, 102, false), None);
        assert_eq!(t.update(calm + END_GRACE, 103, false), Some(Change::Ended));
        assert_eq!(t.since(), None);
    }

    #[test]
    fn an_address_above_its_share_is_named() {
        // Two addresses hold 50 workers each.
        let mut busy = Vec::new();
        for i in 0..100u8 {
            busy.push(ip(2 + i % 2));
        }
        // Nobody waits: nobody is over.
        assert!(over_share(&busy, &[], 100).is_empty());
        // A third address waits: a share is 33, both are over.
        assert_eq!(over_share(&busy, &[ip(99)], 100), vec![ip(2), ip(3)]);
        // One address alone may use the whole pool.
        assert!(over_share(&vec![ip(5); 100], &[ip(5)], 100).is_empty());
        assert!(over_share(&[], &[], 100).is_empty());
        // More addresses than workers: one worker each is still fair.
        assert!(over_share(&[ip(2), ip(3)], &[ip(4)], 2).is_empty());
        assert_eq!(over_share(&[ip(2), ip(2)], &[ip(4)], 2), vec![ip(2)]);
    }

    #[test]
    fn only_the_greedy_address_is_over() {
        let mut busy = vec![ip(2); 60];
        busy.extend(vec![ip(3); 20]);
        busy.extend(vec![ip(4); 20]);
        assert_eq!(over_share(&busy, &[], 100), vec![ip(2)]);
    }
}
