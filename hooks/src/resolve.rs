//! Host names in `inet:host:port` hook sockets, resolved within the caller's deadline.
//!
//! `getaddrinfo(3)` has no timeout of its own: a resolver that does not answer would
//! hold a session past its phase deadline until the watchdog ends the worker. The
//! lookup runs on a short-lived thread and the caller waits at most until its
//! deadline; a lookup still running then is abandoned (its thread ends when the
//! resolver gives up) and the hook fails with "timed out", so its `on_error` applies
//! in time. An address literal (`127.0.0.1`, `[::1]`) needs no lookup.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc;
use std::time::Instant;

/// The addresses of `host` (a name or an address literal, brackets allowed) on `port`.
pub fn resolve(host: &str, port: u16, deadline: Instant) -> io::Result<Vec<SocketAddr>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(timed_out(bare));
    }
    let (tx, rx) = mpsc::channel();
    let name = bare.to_string();
    std::thread::Builder::new()
        .name("hook-resolve".into())
        .spawn(move || {
            let r = (name.as_str(), port)
                .to_socket_addrs()
                .map(|a| a.collect::<Vec<_>>());
            // The caller may have given up: nobody to tell.
            let _ = tx.send(r);
        })?;
    match rx.recv_timeout(left) {
        Ok(r) => r,
        Err(_) => Err(timed_out(bare)),
    }
}

fn timed_out(host: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("timed out resolving {host}"),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    #[test]
    fn literals_need_no_lookup_and_names_resolve() {
        let soon = Instant::now() + Duration::from_secs(5);
        assert_eq!(
            resolve("127.0.0.1", 25, soon).unwrap(),
            vec!["127.0.0.1:25".parse().unwrap()]
        );
        assert_eq!(
            resolve("[::1]", 25, soon).unwrap(),
            vec!["[::1]:25".parse().unwrap()]
        );
        assert!(resolve("localhost", 25, soon)
            .unwrap()
            .iter()
            .all(|a| a.ip().is_loopback()));
    }

    #[test]
    fn a_past_deadline_is_a_timeout_not_a_wait() {
        let e = resolve("localhost", 25, Instant::now()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(e.to_string(), "timed out resolving localhost");
    }
}
