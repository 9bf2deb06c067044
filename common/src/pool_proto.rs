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
//! Right after its `B` record a worker writes a 52-octet client record: `A`, its pid
//! as 10 digits, a space, the client's address left-justified in 39 octets, `\n`. The
//! supervisor uses it to share the pool fairly between addresses under overload.
//!
//! - `SLOOP_HANDOFF_FD=6`: the receiving end of a datagram socket pair shared by all
//!   workers. While the pool is overloaded the supervisor accepts connections itself
//!   (its busy acceptor); when a worker becomes idle it passes the oldest of them down
//!   this socket (`SCM_RIGHTS`, one octet of payload). An idle worker waits on it as on
//!   the listeners and prefers it.
//!
//! Overload: while every worker is busy at `smtpd.max_processes`, the supervisor keeps
//! `<run_dir>/overload` (`pool_state.rs`) and sends `SIGWINCH` to every worker when it
//! appears, changes or goes; a worker re-reads it then (SIGWINCH is ignored by
//! default, so a worker that has not yet set its handler loses nothing) and in overload
//! waits for a client command at most `smtpd.overload_idle_timeout`.
//!
//! Signals from the supervisor to a worker: `SIGHUP`: finish the current session (if
//! any) and exit, so a new worker starts on the reloaded config; `SIGTERM`: stop
//! accepting, finish the session within `supervisor.stop_timeout`, exit. The supervisor
//! sends `SIGKILL` once that deadline has passed.

/// Environment variable naming the inherited listening descriptors.
pub const ENV_LISTEN_FDS: &str = "SLOOP_LISTEN_FDS";
/// Environment variable naming the status pipe's write end.
pub const ENV_STATUS_FD: &str = "SLOOP_STATUS_FD";
/// Environment variable naming the hand-off socket's receiving end.
pub const ENV_HANDOFF_FD: &str = "SLOOP_HANDOFF_FD";
/// Environment variable naming the inherited, sealed memory file holding the TLS
/// certificates, keys and session-ticket keys (`sloop_common::tls_material::Bundle`);
/// absent when TLS is not configured. The worker reads it once and closes it.
pub const ENV_TLS_FD: &str = "SLOOP_TLS_FD";
/// Octets in one status record.
pub const RECORD_LEN: usize = 16;
/// Octets in one client record.
pub const CLIENT_RECORD_LEN: usize = 52;

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

/// Encodes a client record: worker `pid` now serves a client at `ip`.
pub fn encode_client(pid: u32, ip: std::net::IpAddr) -> [u8; CLIENT_RECORD_LEN] {
    let mut rec = [b' '; CLIENT_RECORD_LEN];
    rec[0] = b'A';
    let digits = format!("{pid:010}");
    rec[1..11].copy_from_slice(&digits.as_bytes()[..10]);
    let addr = ip.to_string();
    let n = addr.len().min(CLIENT_RECORD_LEN - 13);
    rec[12..12 + n].copy_from_slice(&addr.as_bytes()[..n]);
    rec[CLIENT_RECORD_LEN - 1] = b'\n';
    rec
}

/// Decodes a client record; `None` for garbage.
pub fn decode_client(rec: &[u8]) -> Option<(u32, std::net::IpAddr)> {
    if rec.len() != CLIENT_RECORD_LEN || rec[0] != b'A' || rec[CLIENT_RECORD_LEN - 1] != b'\n' {
        return None;
    }
    let pid = std::str::from_utf8(&rec[1..11]).ok()?.parse().ok()?;
    let ip = std::str::from_utf8(&rec[12..CLIENT_RECORD_LEN - 1])
        .ok()?
        .trim_end()
        .parse()
        .ok()?;
    Some((pid, ip))
}

/// Parses `SLOOP_HANDOFF_FD`.
pub fn handoff_fd_from_env() -> Option<i32> {
    std::env::var(ENV_HANDOFF_FD)
        .ok()
        .and_then(|v| v.trim().parse().ok())
}

/// Parses `SLOOP_TLS_FD`.
pub fn tls_fd_from_env() -> Option<i32> {
    std::env::var(ENV_TLS_FD)
        .ok()
        .and_then(|v| v.trim().parse().ok())
}

/// A descriptor variable that is set but is not what it must be (a comma-separated
/// list of descriptor numbers, or one number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadFdVar {
    pub var: &'static str,
    pub value: String,
}

impl std::fmt::Display for BadFdVar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}={:?}: not a list of descriptor numbers",
            self.var, self.value
        )
    }
}

impl std::error::Error for BadFdVar {}

/// Parses `SLOOP_LISTEN_FDS` (unset: none). Garbage is an error, not skipped: a
/// worker that silently dropped a listener would serve fewer ports than configured.
pub fn listen_fds_from_env() -> Result<Vec<i32>, BadFdVar> {
    match std::env::var(ENV_LISTEN_FDS) {
        Ok(v) => parse_fd_list(ENV_LISTEN_FDS, &v),
        Err(_) => Ok(Vec::new()),
    }
}

/// Parses `SLOOP_STATUS_FD` (unset: none).
pub fn status_fd_from_env() -> Result<Option<i32>, BadFdVar> {
    match std::env::var(ENV_STATUS_FD) {
        Ok(v) => match parse_fd_list(ENV_STATUS_FD, &v)?.as_slice() {
            [fd] => Ok(Some(*fd)),
            _ => Err(BadFdVar {
                var: ENV_STATUS_FD,
                value: v,
            }),
        },
        Err(_) => Ok(None),
    }
}

/// `3,4,5` as descriptor numbers; anything else (an empty item, a sign, a word) is
/// refused whole.
pub fn parse_fd_list(var: &'static str, value: &str) -> Result<Vec<i32>, BadFdVar> {
    let bad = || BadFdVar {
        var,
        value: value.to_string(),
    };
    value
        .split(',')
        .map(|s| {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            s.parse().map_err(|_| bad())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
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

    #[test]
    fn client_records_round_trip() {
        for ip in [
            "127.0.0.2",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::1",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            let rec = encode_client(77, ip);
            assert_eq!(decode_client(&rec), Some((77, ip)));
        }
        assert_eq!(decode_client(&encode(1, Availability::Busy)), None);
    }

    /// Regression: `SLOOP_LISTEN_FDS=3,x` adopted fd 3 and silently dropped the rest.
    #[test]
    fn descriptor_lists_are_numbers_or_refused() {
        assert_eq!(parse_fd_list(ENV_LISTEN_FDS, "3, 4,5"), Ok(vec![3, 4, 5]));
        for bad in ["3,x", "", "3,,4", "-1", "3;4", "99999999999"] {
            let e = parse_fd_list(ENV_LISTEN_FDS, bad).unwrap_err();
            assert_eq!(e.var, ENV_LISTEN_FDS, "{bad:?}");
        }
    }
}
