//! The free-space check at MAIL FROM (`queue.min_free`, `sloop_common::spool::space`).
//!
//! Below `queue.min_free`, or when a declared `SIZE` would take the spool below it,
//! MAIL FROM gets `452 4.3.1 Insufficient system storage`, before any octet of the
//! message is sent (Postfix does the same). The check looks at the spool the message
//! is committed into (`server.spool_dir`); one `statvfs(2)` per transaction. If
//! `statvfs` fails the message is accepted: the commit still fails cleanly (`451`)
//! when the disk is really full, and nothing is acknowledged that was not written.

use crate::reply::Reply;
use sloop_common::spool::space::{ensure_room, Room};
use sloop_common::spool::Spool;
use sloop_common::Config;

/// The refusal for a transaction declaring `declared` octets, if the spool has no room.
pub fn at_mail(cfg: &Config, spool: &Spool, declared: Option<u64>) -> Option<Reply> {
    let room = ensure_room(
        spool,
        &cfg.server.run_dir,
        cfg.queue.min_free,
        declared.unwrap_or(0),
    );
    match room {
        Room::Enough | Room::Unknown(_) => None,
        Room::Short { .. } => Some(insufficient_storage()),
    }
}

/// `452 4.3.1 Insufficient system storage`.
pub fn insufficient_storage() -> Reply {
    Reply::new(452, (4, 3, 1), "Insufficient system storage")
}
