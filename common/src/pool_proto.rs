//! The fixed protocol between `sloopd` and the processes it starts (in the spirit of
//! Postfix's `master_proto.h`).
//!
//! `sloopd` binds every listener before starting anything and passes the sockets down
//! by inheritance: the environment says which descriptors they are.
//!
//! - `SLOOP_LISTEN_FDS=3,4`: listening TCP sockets, in the order of `smtpd.listen`.
//! - `SLOOP_STATUS_FD=5`: write end of the status pipe shared by all smtpd workers.
//! - `SLOOP_CONFIG=/path`: the config file the supervisor validated.
//! - `SLOOP_TLS_FD=6`: a sealed memory file with the TLS material (when configured).
//!
//! Each listening socket's role (`smtpd`, `submission`, `submissions`) is not passed:
//! the worker matches the socket's local address against the three `*.listen` lists.
//!
//! A worker writes one 16-octet record per state change (atomic: less than PIPE_BUF):
//! `I` or `B` (idle / busy), then its pid as 10 decimal digits, then 4 octets of
//! padding and `\n`. The supervisor counts idle workers from these records and keeps
//! `smtpd.min_idle` ready. A write that fails with `EPIPE` means the supervisor is gone:
//! the worker exits after its session. A worker exits by itself after
//! `smtpd.max_use` sessions.
//!
//! Signals from the supervisor to a worker: `SIGHUP`: finish the current session (if
//! any) and exit, so a new worker starts on the reloaded config; `SIGTERM`: stop
//! accepting, finish the session within `supervisor.stop_timeout`, exit. The supervisor
//! sends `SIGKILL` once that deadline has passed.

/// Environment variable naming the inherited listening descriptors.
pub const ENV_LISTEN_FDS: &str = "SLOOP_LISTEN_FDS";
/// Environment variable naming the status pipe's write end.
pub const ENV_STATUS_FD: &str = "SLOOP_STATUS_FD";
/// Environment variable naming the inherited, sealed memory file holding the TLS
/// certificates, keys and session-ticket keys (`sloop_common::tls_material::Bundle`);
/// absent when TLS is not configured. The worker reads it once and closes it.
pub const ENV_TLS_FD: &str = "SLOOP_TLS_FD";
/// Octets in one status record.
pub const RECORD_LEN: usize = 16;

/// A worker's availability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Idle,
    Busy,
}

/// Encodes a status record.
pub fn encode(pid: u32, state: Availability) -> [u8; RECORD_LEN] {
    let mut rec = [b' '; RECORD_LEN];
    rec[0] = if state == Availability::Idle {
        b'I'
    } else {
        b'B'
    };
    let digits = format!("{pid:010}");
    rec[1..11].copy_from_slice(&digits.as_bytes()[..10]);
    rec[RECORD_LEN - 1] = b'\n';
    rec
}

/// Decodes a status record; `None` for garbage (which the supervisor logs and ignores).
pub fn decode(rec: &[u8]) -> Option<(u32, Availability)> {
    if rec.len() != RECORD_LEN || rec[RECORD_LEN - 1] != b'\n' {
        return None;
    }
    let state = match rec[0] {
        b'I' => Availability::Idle,
        b'B' => Availability::Busy,
        _ => return None,
    };
    let pid = std::str::from_utf8(&rec[1..11]).ok()?.parse().ok()?;
    Some((pid, state))
}

/// Parses `SLOOP_LISTEN_FDS`.
pub fn listen_fds_from_env() -> Vec<i32> {
    std::env::var(ENV_LISTEN_FDS)
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Parses `SLOOP_TLS_FD`.
pub fn tls_fd_from_env() -> Option<i32> {
    std::env::var(ENV_TLS_FD)
        .ok()
        .and_then(|v| v.trim().parse().ok())
}

/// Parses `SLOOP_STATUS_FD`.
pub fn status_fd_from_env() -> Option<i32> {
    std::env::var(ENV_STATUS_FD)
        .ok()
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let rec = encode(12345, Availability::Busy);
        assert_eq!(decode(&rec), Some((12345, Availability::Busy)));
        assert_eq!(
            decode(&encode(u32::MAX, Availability::Idle)),
            Some((u32::MAX, Availability::Idle))
        );
        assert_eq!(decode(b"garbage garbage\n"), None);
        assert_eq!(decode(b"short"), None);
    }
}
