//! `public/showq`: the queue listing for local users who may not read the spool
//! (Postfix's showq), and the flush request of `sendmail -q` (Postfix's flush
//! service). `sloop-drop mailq|flush` connects (its group may, the socket is mode 0660
//! in the submission group) and writes one request line: `list` gets the text of
//! `sloop queue list`, `flush` moves the deferred mail back to `incoming/` (as
//! `sloop queue flush`, logged with the caller's uid) and gets its one-line result; a
//! client that writes nothing within [`REQUEST_TIMEOUT`] gets the listing. Then the
//! connection is closed. A thread per connection does the work, under a write
//! timeout, and at most [`MAX_WRITERS`] at once: more connections are closed at once.

use crate::cli::operator::{run_queue, QueueCmd};
use sloop_common::spool::Spool;
use std::io::{self, BufWriter, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Most listings written at once.
pub const MAX_WRITERS: usize = 4;
/// How long a client may take to write its request line.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest request line read.
const MAX_REQUEST: usize = 64;
/// How long one listing may take to be read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Mode of the socket: the owner and the submission group may connect.
const SOCKET_MODE: u32 = 0o660;

/// The listening socket and the count of listings being written.
pub struct Listener {
    socket: UnixListener,
    writers: Arc<AtomicUsize>,
}

impl Listener {
    /// Binds `public/showq` afresh (a socket left by a previous pickup is removed).
    pub fn bind(spool: &Spool) -> io::Result<Listener> {
        let path = spool.showq_socket();
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let socket = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(SOCKET_MODE))?;
        socket.set_nonblocking(true)?;
        Ok(Listener {
            socket,
            writers: Arc::new(AtomicUsize::new(0)),
        })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Accepts every waiting connection and starts its listing.
    pub fn accept_all(&self, spool: &Spool) {
        loop {
            match self.socket.accept() {
                Ok((stream, _)) => self.answer(stream, spool),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("public/showq: accept failed: {e}");
                    return;
                }
            }
        }
    }

    fn answer(&self, stream: UnixStream, spool: &Spool) {
        if self.writers.fetch_add(1, Ordering::SeqCst) >= MAX_WRITERS {
            self.writers.fetch_sub(1, Ordering::SeqCst);
            log::warn!(
                "public/showq: {MAX_WRITERS} listings already being written; connection closed"
            );
            return;
        }
        let writers = Arc::clone(&self.writers);
        let spool = spool.clone();
        let spawned = std::thread::Builder::new()
            .name("showq".into())
            .spawn(move || {
                serve(stream, &spool);
                writers.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            self.writers.fetch_sub(1, Ordering::SeqCst);
            log::warn!("public/showq: cannot start a writer: {e}");
        }
    }
}

fn serve(stream: UnixStream, spool: &Spool) {
    if stream.set_nonblocking(false).is_err()
        || stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_err()
        || stream.set_read_timeout(Some(REQUEST_TIMEOUT)).is_err()
    {
        return;
    }
    let flush = read_request(&stream) == Request::Flush;
    let mut out = BufWriter::new(stream);
    if flush {
        let uid = peer_uid(out.get_ref()).map_or_else(|| "unknown".to_string(), |u| u.to_string());
        log::info!("flush requested by uid={uid} (public/showq)");
        if let Err(e) = run_queue(&QueueCmd::Flush, spool, &mut out) {
            let _ = writeln!(out, "sendmail -q: {e}");
        }
    } else if let Err(e) = run_queue(&QueueCmd::List { json: false }, spool, &mut out) {
        let _ = writeln!(out, "mailq: {e}");
    }
    let _ = out.flush();
}

/// What the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    List,
    Flush,
}

/// Reads the request line (at most [`MAX_REQUEST`] octets, until LF or EOF, within
/// [`REQUEST_TIMEOUT`]); anything but `flush` is a listing.
fn read_request(mut stream: &UnixStream) -> Request {
    use std::io::Read;
    let mut line = Vec::with_capacity(MAX_REQUEST);
    let mut byte = [0u8; MAX_REQUEST];
    while line.len() < MAX_REQUEST && !line.contains(&b'\n') {
        match stream.read(&mut byte[..MAX_REQUEST - line.len()]) {
            Ok(0) | Err(_) => break,
            Ok(n) => line.extend_from_slice(&byte[..n]),
        }
    }
    parse_request(&line)
}

fn parse_request(line: &[u8]) -> Request {
    let word = line.split(|b| *b == b'\n').next().unwrap_or_default();
    if word.trim_ascii() == b"flush" {
        Request::Flush
    } else {
        Request::List
    }
}

/// The peer's uid (`SO_PEERCRED`), for the log line.
fn peer_uid(stream: &UnixStream) -> Option<u32> {
    nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .ok()
        .map(|c| c.uid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_flush_flushes() {
        assert_eq!(parse_request(b"flush\n"), Request::Flush);
        assert_eq!(parse_request(b"flush"), Request::Flush);
        assert_eq!(parse_request(b"list\n"), Request::List);
        assert_eq!(parse_request(b""), Request::List);
        assert_eq!(parse_request(b"flushx\n"), Request::List);
        assert_eq!(parse_request(b"\nflush\n"), Request::List);
    }
}
