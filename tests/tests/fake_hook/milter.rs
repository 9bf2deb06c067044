//! A fake milter speaking enough of protocol 6 to reach any stage, and misbehaving at
//! the one its script names.

use super::{bind, hold, read_full, run_listener, Endpoint, Peer, Shared};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Milter commands (MTA to filter), by their protocol letter.
pub mod cmd {
    pub const OPTNEG: u8 = b'O';
    pub const MACRO: u8 = b'D';
    pub const CONNECT: u8 = b'C';
    pub const HELO: u8 = b'H';
    pub const MAIL: u8 = b'M';
    pub const RCPT: u8 = b'R';
    pub const DATA: u8 = b'T';
    pub const HEADER: u8 = b'L';
    pub const EOH: u8 = b'N';
    pub const BODY: u8 = b'B';
    pub const EOM: u8 = b'E';
    pub const ABORT: u8 = b'A';
    pub const QUIT: u8 = b'Q';
    pub const QUIT_NC: u8 = b'K';
    pub const UNKNOWN: u8 = b'U';
}

/// What a fake milter does, for every connection it gets.
#[derive(Debug, Clone)]
pub struct MilterScript {
    /// The version it answers the negotiation with.
    pub version: u32,
    /// The actions it asks for; `None` = exactly what the MTA offered.
    pub actions: Option<u32>,
    /// Closes the connection (as a crashed filter's kernel would) when this command
    /// arrives.
    pub crash_at: Option<u8>,
    /// Reads this command and never answers.
    pub silent_at: Option<u8>,
    /// Answers this command with a progress packet every 200 ms, forever.
    pub progress_at: Option<u8>,
    /// Stops reading when this command arrives (the connection stays open): the MTA's
    /// writes block once the socket buffers are full.
    pub stall_at: Option<u8>,
    /// Answers this command with these raw octets (whole packets, or garbage).
    pub raw_at: Option<(u8, Vec<u8>)>,
    /// Closes the connection right after writing `raw_at`'s octets.
    pub close_after_raw: bool,
}

impl Default for MilterScript {
    fn default() -> Self {
        MilterScript {
            version: 6,
            actions: None,
            crash_at: None,
            silent_at: None,
            progress_at: None,
            stall_at: None,
            raw_at: None,
            close_after_raw: false,
        }
    }
}

/// One milter packet: 4-octet big-endian length (command included), command, data.
pub fn packet(command: u8, data: &[u8]) -> Vec<u8> {
    let mut p = ((data.len() + 1) as u32).to_be_bytes().to_vec();
    p.push(command);
    p.extend_from_slice(data);
    p
}

/// A `y` (reply code) packet with `text` (e.g. `250 2.0.0 fine`), NUL-terminated.
pub fn reply_code(text: &str) -> Vec<u8> {
    let mut d = text.as_bytes().to_vec();
    d.push(0);
    packet(b'y', &d)
}

/// A fake milter speaking enough of protocol 6 to reach any stage.
pub struct FakeMilter {
    pub socket: String,
    shared: Arc<Shared>,
}

impl FakeMilter {
    pub fn start(endpoint: Endpoint, script: MilterScript) -> FakeMilter {
        FakeMilter::start_each(endpoint, vec![script])
    }

    /// Connection N follows `scripts[N]` (the last one for any further connection).
    pub fn start_each(endpoint: Endpoint, scripts: Vec<MilterScript>) -> FakeMilter {
        assert!(!scripts.is_empty());
        let (listener, socket) = bind(endpoint);
        let shared = Arc::new(Shared::default());
        run_listener(listener, shared.clone(), move |mut peer, conn, shared| {
            let script = &scripts[conn.min(scripts.len() - 1)];
            serve_milter(&mut *peer, conn, shared, script);
        });
        FakeMilter { socket, shared }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// The commands received on connection `conn` so far, as letters (`O`, `D`, `C`,
    /// ...), macros (`D`) left out.
    pub fn commands(&self, conn: usize) -> String {
        let prefix = format!("{conn}:");
        self.shared
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter(|c| *c != "D")
            .collect()
    }
}

impl Drop for FakeMilter {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_milter(peer: &mut dyn Peer, conn: usize, shared: &Shared, s: &MilterScript) {
    loop {
        let mut len = [0u8; 4];
        if !read_full(peer, &mut len, shared) {
            return;
        }
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 || len > 1 << 20 {
            return;
        }
        let mut body = vec![0u8; len];
        if !read_full(peer, &mut body, shared) {
            return;
        }
        let command = body[0];
        let data = &body[1..];
        shared
            .seen
            .lock()
            .unwrap()
            .push(format!("{conn}:{}", command as char));
        if s.crash_at == Some(command) {
            return;
        }
        if s.silent_at == Some(command) {
            return hold(peer, shared);
        }
        if s.stall_at == Some(command) {
            while !shared.stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
            return;
        }
        if s.progress_at == Some(command) {
            while !shared.stop.load(Ordering::Relaxed) {
                if peer.write_all(&packet(b'p', b"")).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            return;
        }
        if let Some((at, bytes)) = &s.raw_at {
            if *at == command {
                if peer.write_all(bytes).is_err() || s.close_after_raw {
                    return;
                }
                continue;
            }
        }
        let answer = match command {
            cmd::OPTNEG => {
                let offered = data
                    .get(4..8)
                    .map_or(0, |b| u32::from_be_bytes(b.try_into().unwrap()));
                let mut d = s.version.to_be_bytes().to_vec();
                d.extend_from_slice(&s.actions.unwrap_or(offered).to_be_bytes());
                // Every event, each answered: the protocol flags a plain filter asks.
                d.extend_from_slice(&0u32.to_be_bytes());
                packet(b'O', &d)
            }
            cmd::MACRO | cmd::ABORT => continue,
            cmd::QUIT | cmd::QUIT_NC => return,
            _ => packet(b'c', b""),
        };
        if peer.write_all(&answer).is_err() {
            return;
        }
    }
}
