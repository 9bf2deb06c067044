//! A fake Postfix policy server whose answers follow a script.

use super::{bind, hold, run_listener, Endpoint, Shared};
use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What the fake policy server does with one request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// Writes these octets (normally `action=...\n\n`) and waits for the next request.
    Raw(Vec<u8>),
    /// Reads the request and never answers (the connection stays open).
    Silent,
    /// Writes these octets, then closes the connection.
    CloseAfter(Vec<u8>),
}

impl Answer {
    /// `action=<text>\n\n`.
    pub fn action(text: &str) -> Answer {
        Answer::Raw(format!("action={text}\n\n").into_bytes())
    }
}

/// A fake Postfix policy server: request N (counted over all connections) gets
/// `script[N]`, requests past the end get the script's last answer.
pub struct FakePolicy {
    pub socket: String,
    shared: Arc<Shared>,
}

impl FakePolicy {
    pub fn start(endpoint: Endpoint, script: Vec<Answer>) -> FakePolicy {
        assert!(!script.is_empty());
        let (listener, socket) = bind(endpoint);
        let shared = Arc::new(Shared::default());
        let next = Arc::new(AtomicUsize::new(0));
        run_listener(listener, shared.clone(), move |mut peer, _, shared| {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                // A request ends with an empty line.
                while !has_request(&buf) {
                    if shared.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    match peer.read(&mut chunk) {
                        Ok(0) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        Err(e)
                            if matches!(
                                e.kind(),
                                ErrorKind::WouldBlock
                                    | ErrorKind::TimedOut
                                    | ErrorKind::Interrupted
                            ) => {}
                        Err(_) => return,
                    }
                }
                let end = buf.windows(2).position(|w| w == b"\n\n").unwrap() + 2;
                let request: Vec<u8> = buf.drain(..end).collect();
                shared
                    .seen
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&request).into_owned());
                let n = next.fetch_add(1, Ordering::SeqCst);
                let answer = script[n.min(script.len() - 1)].clone();
                match answer {
                    Answer::Raw(bytes) => {
                        if peer.write_all(&bytes).is_err() {
                            return;
                        }
                    }
                    Answer::Silent => return hold(&mut *peer, shared),
                    Answer::CloseAfter(bytes) => {
                        let _ = peer.write_all(&bytes);
                        return;
                    }
                }
            }
        });
        FakePolicy { socket, shared }
    }

    /// Every request received so far (complete ones only).
    pub fn requests(&self) -> Vec<String> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

impl Drop for FakePolicy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

fn has_request(buf: &[u8]) -> bool {
    buf.windows(2).any(|w| w == b"\n\n")
}
