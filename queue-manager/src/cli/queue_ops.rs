//! The queue-changing commands of the `sloop` CLI: `delete`, `hold`, `release`, `flush`.
//!
//! Each change is one rename (or the spool's removal) followed by a poke on the trigger
//! FIFO, as docs/architecture.md §4 requires of operator tools, so they work with or without
//! the daemons. A message the queue manager moves at the same moment is looked up again
//! once; one that is gone (delivered) is reported as "no such message". Holding or
//! deleting a message in `active/` takes it from under the queue manager: its current
//! attempt finishes, but the manager finds the file gone or held and leaves it there.

use super::queue_view::{check_spool, find, ids_in, write_out};
use super::ToolError;
use sloop_common::exitcode;
use sloop_common::spool::{QueueState, Spool, SpoolError};
use std::io::Write;

/// What to do to each selected message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Delete,
    Hold,
    Release,
}

impl Action {
    /// The states `--all` selects for this action.
    fn states(self) -> &'static [QueueState] {
        match self {
            Action::Delete => &QueueState::ALL,
            Action::Hold => &[
                QueueState::Incoming,
                QueueState::Active,
                QueueState::Deferred,
            ],
            Action::Release => &[QueueState::Hold],
        }
    }

    fn past(self) -> &'static str {
        match self {
            Action::Delete => "deleted",
            Action::Hold => "held",
            Action::Release => "released",
        }
    }
}

/// Which messages a command applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    Ids(Vec<String>),
    All,
}

/// Applies `action` to `targets`, one line per message on `out`. Every ID is tried; the
/// first error's exit code is returned after all of them, each error printed on stderr.
pub fn apply(
    spool: &Spool,
    action: Action,
    targets: &Targets,
    out: &mut impl Write,
) -> Result<(), ToolError> {
    check_spool(spool)?;
    let ids = match targets {
        Targets::Ids(ids) => ids.clone(),
        Targets::All => all_ids(spool, action.states())?,
    };
    let mut first_err = None;
    let mut changed = 0;
    for id in &ids {
        match apply_one(spool, action, id) {
            Ok(true) => {
                changed += 1;
                write_out(out, &format!("{id}: {}\n", action.past()))?;
            }
            Ok(false) => {}
            Err(e) => {
                eprintln!("sloop: {}", e.message);
                first_err.get_or_insert(e);
            }
        }
    }
    if changed > 0 {
        spool.poke();
    }
    if matches!(targets, Targets::All) {
        write_out(out, &format!("{changed} message(s) {}\n", action.past()))?;
    }
    match first_err {
        Some(e) => Err(ToolError::new(
            e.code,
            format!("{} failed", action_name(action)),
        )),
        None => Ok(()),
    }
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::Delete => "delete",
        Action::Hold => "hold",
        Action::Release => "release",
    }
}

/// `sloop queue flush`: every deferred message back to `incoming/` for an attempt now.
pub fn flush(spool: &Spool, out: &mut impl Write) -> Result<(), ToolError> {
    check_spool(spool)?;
    let mut moved = 0;
    for id in ids_in(spool, QueueState::Deferred)? {
        match spool.move_to(&id, QueueState::Deferred, QueueState::Incoming) {
            Ok(()) => moved += 1,
            Err(e) if e.source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(e)),
        }
    }
    spool.poke();
    write_out(
        out,
        &format!("{moved} deferred message(s) queued for delivery\n"),
    )
}

fn all_ids(spool: &Spool, states: &[QueueState]) -> Result<Vec<String>, ToolError> {
    let mut ids = Vec::new();
    for s in states {
        ids.extend(ids_in(spool, *s)?);
    }
    Ok(ids)
}

/// Applies `action` to one message; `Ok(false)` when there was nothing to do.
fn apply_one(spool: &Spool, action: Action, id: &str) -> Result<bool, ToolError> {
    for _ in 0..2 {
        let (state, _) = find(spool, id)?;
        let result = match (action, state) {
            (Action::Delete, s) => spool.remove(s, id),
            (Action::Hold, QueueState::Hold) => return Ok(false),
            (Action::Hold, s) => spool.move_to(id, s, QueueState::Hold),
            (Action::Release, QueueState::Hold) => {
                spool.move_to(id, QueueState::Hold, QueueState::Incoming)
            }
            (Action::Release, s) => {
                eprintln!("sloop: {id}: not on hold (in {s})");
                return Ok(false);
            }
        };
        match result {
            Ok(()) => return Ok(true),
            // Moved by the queue manager between find and rename: look again.
            Err(e) if e.source.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error(e)),
        }
    }
    Err(ToolError::new(
        exitcode::EX_TEMPFAIL,
        format!("{id}: message keeps moving, try again"),
    ))
}

fn io_error(e: SpoolError) -> ToolError {
    let code = if e.source.kind() == std::io::ErrorKind::PermissionDenied {
        exitcode::EX_NOPERM
    } else {
        exitcode::EX_IOERR
    };
    ToolError::new(code, e.to_string())
}
