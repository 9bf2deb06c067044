//! Operator and injection tools: `sloop-queue` (the qmail-queue compatible injector),
//! `sloop` (the operator CLI) and `sloop-sendmail` (the sendmail(8) interface).
//!
//! They read the spool directly and change it only through the durable commit
//! (`sloop_common::spool::inject`) or renames followed by a poke on the trigger FIFO, so
//! they work whether or not the daemons run (docs/architecture.md §4). Each tool's errors
//! are a [`ToolError`]: one line of text and the exit code of its boundary (qmail-queue
//! codes for `sloop-queue`, sysexits for the others); `main` is the only funnel.

pub mod drop;
pub mod inject;
pub mod operator;
pub mod passwd;
pub mod queue_ops;
pub mod queue_view;
pub mod sendmail;
pub mod sendmail_args;
pub mod sendmail_message;

use sloop_common::config::{self, Config};
use sloop_common::exitcode;
use std::fmt;
use std::path::Path;

/// A tool's failure: what to print and how to exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolError {
    pub code: i32,
    pub message: String,
}

impl ToolError {
    pub fn new(code: i32, message: impl Into<String>) -> ToolError {
        ToolError {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ToolError {}

/// Loads the config from `-c FILE`, `$SLOOP_CONFIG` or the packaged default; a failure
/// becomes a [`ToolError`] with `code` and the full error list.
pub fn load_config(cli: Option<&Path>, code: i32) -> Result<Config, ToolError> {
    let path = config::resolve_path(cli);
    Config::load_inherited(&path).map_err(|e| ToolError::new(code, e.to_string()))
}

/// Prints `prog: message` on stderr and returns the exit code (the funnel of `main`).
pub fn report(prog: &str, result: Result<(), ToolError>) -> i32 {
    match result {
        Ok(()) => exitcode::EX_OK,
        Err(e) => {
            eprintln!("{prog}: {}", e.message);
            e.code
        }
    }
}

/// Refuses with exit `code` (a temporary failure) when the spool is below
/// `queue.min_free` (after giving back the recycling pool), before anything is read:
/// the one check of `sendmail` and `sloop-queue`, as the smtpd's `452 4.3.1`.
pub fn check_room(
    cfg: &sloop_common::Config,
    spool: &sloop_common::spool::Spool,
    code: i32,
) -> Result<(), ToolError> {
    use sloop_common::spool::space::{ensure_room, human, Room};
    let min = cfg.queue.min_free;
    match ensure_room(spool, &cfg.server.run_dir, min, 0) {
        Room::Enough | Room::Unknown(_) => Ok(()),
        Room::Short { free } => Err(ToolError::new(
            code,
            format!(
                "insufficient system storage: the spool ({}) has {} free, below \
                 queue.min_free ({}); message not queued, try again later",
                spool.root().display(),
                human(free),
                human(min)
            ),
        )),
    }
}
