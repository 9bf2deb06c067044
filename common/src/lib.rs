//! `sloop-common`: what every Sloop program shares.
//!
//! - [`config`]: the one validated configuration (SEED.md G6).
//! - [`spool`]: the queue's on-disk layout, queue IDs, envelopes, commit and recovery.
//! - [`exitcode`]: qmail-queue and sysexits exit codes, one mapping per boundary.
//! - [`logging`]: one line per event, program name and pid first.
//! - [`secure_fs`]: umask, and owner/mode changes that never follow a symlink.

pub mod aliases;
pub mod config;
pub mod delivery_proto;
pub mod exitcode;
pub mod local_recipient;
pub mod logging;
pub mod passwd;
pub mod pool_proto;
pub mod pool_state;
pub mod secure_fs;
pub mod spool;
pub mod tls_material;

pub use config::Config;
