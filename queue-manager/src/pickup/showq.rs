//! `public/showq`: the queue listing for local users who may not read the spool
//! (Postfix's showq). `sloop-drop mailq` connects (its group may, the socket is mode
//! 0660 in the submission group); each connection gets the text of `sloop queue list`
//! and is closed. A thread per connection writes it, under a write timeout, and at most
//! [`MAX_WRITERS`] at once: more connections are closed at once.

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
                write_listing(stream, &spool);
                writers.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            self.writers.fetch_sub(1, Ordering::SeqCst);
            log::warn!("public/showq: cannot start a writer: {e}");
        }
    }
}

fn write_listing(stream: UnixStream, spool: &Spool) {
    if stream.set_nonblocking(false).is_err()
        || stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_err()
    {
        return;
    }
    let mut out = BufWriter::new(stream);
    if let Err(e) = run_queue(&QueueCmd::List { json: false }, spool, &mut out) {
        let _ = writeln!(out, "mailq: {e}");
    }
    let _ = out.flush();
}
