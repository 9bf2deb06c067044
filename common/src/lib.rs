//! `sloop-common`: what every Sloop program shares.
//!
//! - [`config`]: the one validated configuration, parsed and checked at load, never
//!   read raw during a session (a config that fails validation never reaches a serving
//!   process: `docs/architecture.md` §2).
//! - [`spool`]: the queue's on-disk layout, queue IDs, envelopes, commit and recovery.
//! - [`aliases`]: the aliases file (aliases(5) syntax), loaded and checked as a table.
//! - [`local_recipient`]: what an address is to this node (not local, alias, mailbox,
//!   unknown, invalid), for the smtpd at RCPT time and for local delivery.
//! - [`delivery_proto`]: the line protocol between `sloop-qmgr` and `sloop-deliver`.
//! - [`dsn_params`]: syntax of the DSN parameters (NOTIFY, ORCPT, ENVID), one check
//!   for a client's MAIL/RCPT and for a milter's edits.
//! - [`pool_proto`]: what `sloopd` passes to smtpd workers (descriptors, environment)
//!   and the workers' status records.
//! - [`exitcode`]: qmail-queue and sysexits exit codes, one mapping per boundary.
//! - [`header`]: a message's header fields, read in place (`Received` counting, the
//!   `message-id=` log line).
//! - [`logging`]: one line per event, program name and pid first.
//! - [`priority`]: the delivery side's CPU priority (`queue.nice`).
//! - [`quickack`]: immediate ACKs for a reply read in pieces (a peer's Nagle against
//!   our delayed ACK).
//! - [`secure_fs`]: umask, and owner/mode changes that never follow a symlink.
//! - [`passwd`], [`pool_state`], [`tls_material`]: the AUTH password file, the pool's
//!   shared state files, and the checked certificates and keys.

pub mod aliases;
pub mod config;
pub mod delivery_proto;
pub mod dsn_params;
pub mod exitcode;
pub mod header;
pub mod local_recipient;
pub mod logging;
pub mod passwd;
pub mod pool_proto;
pub mod pool_state;
pub mod priority;
pub mod quickack;
pub mod secure_fs;
pub mod spool;
pub mod tls_material;

pub use config::Config;
