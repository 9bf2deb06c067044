//! CPU priority (the nice value) of the delivery side, `queue.nice`.
//!
//! `sloop-qmgr` lowers its own priority at start by `queue.nice` below the one `sloopd`
//! gave it; the delivery workers it starts inherit it. On a machine short of CPU the
//! smtpd then accepts first and the deliveries catch up when it is idle, as Exim's
//! `queue_only_load` and sendmail's `QueueLA` queue rather than deliver under load,
//! but without stopping delivery: a process at nice 5 still gets about a third of the
//! CPU share of one at nice 0. What keeps the queue from outgrowing the disk under a
//! long flood is `queue.min_free` (452 at MAIL FROM), not this.
//!
//! On Linux the nice value belongs to a thread: the queue manager sets it in its main
//! thread before it starts anything, and threads and processes started after inherit it.
//!
//! An unprivileged process may raise its nice value but not lower it again, so a
//! reload that lowers `queue.nice` takes effect at the queue manager's next start.
//!
//! `getpriority(2)` and `setpriority(2)` have no wrapper in nix: the two `unsafe`
//! blocks below are plain system calls on the calling process, with no pointers.
#![allow(unsafe_code)]

use nix::errno::Errno;
use std::io;

/// The highest nice value Linux allows (the lowest priority).
const NICE_MAX: i32 = 19;

/// The nice value of the calling process.
pub fn current() -> io::Result<i32> {
    // -1 is both a valid nice value and the error return: errno tells them apart.
    Errno::clear();
    // SAFETY: getpriority takes two integers and touches no memory of ours.
    let value = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    if value == -1 && Errno::last_raw() != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// Sets the nice value of the calling process (its later children inherit it).
pub fn set(value: i32) -> io::Result<()> {
    // SAFETY: setpriority takes three integers and touches no memory of ours.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, value) };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The nice value `by` steps below `base`, within what Linux allows.
pub fn lowered(base: i32, by: u32) -> i32 {
    let by = i32::try_from(by).unwrap_or(NICE_MAX);
    base.saturating_add(by).min(NICE_MAX).max(base)
}

/// A process's priority relative to the one it started with.
#[derive(Debug, Clone, Copy)]
pub struct Priority {
    /// The nice value the process started at (`sloopd`'s).
    base: i32,
}

impl Priority {
    /// Lowers the calling process's priority `by` steps below the one it started at;
    /// logs (and otherwise ignores) a failure: a priority is no reason not to deliver.
    pub fn start(by: u32) -> Priority {
        let base = match current() {
            Ok(v) => v,
            Err(e) => {
                log::warn!("cannot read the CPU priority (queue.nice ignored): {e}");
                return Priority::at(0);
            }
        };
        let p = Priority::at(base);
        p.apply(by);
        p
    }

    /// The priority of a process that started at nice `base`, changing nothing yet.
    pub fn at(base: i32) -> Priority {
        Priority { base }
    }

    /// After a reload: moves to `by` steps below the start priority. Lowering the
    /// nice value needs privilege; without it the change waits for the next start.
    pub fn apply(&self, by: u32) {
        let want = lowered(self.base, by);
        match current() {
            Ok(now) if now == want => {}
            Ok(now) => match set(want) {
                Ok(()) => log::info!("CPU priority: nice {want} (queue.nice = {by})"),
                Err(e) if want < now => log::warn!(
                    "queue.nice = {by} (nice {want}) takes effect when this process next starts: \
                     cannot raise the priority back from nice {now}: {e}"
                ),
                Err(e) => log::warn!("cannot set the CPU priority to nice {want}: {e}"),
            },
            Err(e) => log::warn!("cannot read the CPU priority (queue.nice ignored): {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowered_adds_within_linux_bounds() {
        assert_eq!(lowered(0, 5), 5);
        assert_eq!(lowered(0, 0), 0);
        assert_eq!(lowered(-5, 5), 0);
        assert_eq!(lowered(10, 5), 15);
        assert_eq!(lowered(16, 5), 19);
        assert_eq!(lowered(19, 5), 19);
        assert_eq!(lowered(-20, 19), -1);
        assert_eq!(lowered(0, u32::MAX), 19);
    }

    #[test]
    fn current_reads_what_the_kernel_reports() {
        // Field 19 of /proc/thread-self/stat is the nice value (proc(5)); the command name in
        // field 2 is in parentheses and may hold spaces, so count after the last ')'.
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        let nice: i32 = after
            .split_whitespace()
            .nth(16)
            .and_then(|f| f.parse().ok())
            .unwrap_or(i32::MIN);
        assert_eq!(current().ok(), Some(nice));
    }
}
