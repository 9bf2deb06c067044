//! `sloop-queue`: the qmail-queue(8) compatible injector (docs/architecture.md §4; the
//! contract is documented in docs/sloop-queue.8.md).
//!
//! The message arrives on fd 0 and is streamed into `tmp/` until EOF; only then is the
//! envelope read from fd 1 (`F<sender>\0T<rcpt>\0...\0\0`), so a writer that sends the
//! message first and the envelope last never deadlocks. The commit itself is
//! `sloop_common::spool::inject::commit_streaming`: no failure path leaves a visible
//! partial message. Exit codes follow qmail's ranges (0 committed, 11-40 permanent,
//! others temporary); the error is one line on stderr. `$SLOOP_QUEUE_ID`, when it holds
//! a valid queue ID, names the message (the smtpd puts it in its `Received` header).

use super::ToolError;
use sloop_common::exitcode;
use sloop_common::spool::inject::{commit_streaming, InjectError};
use sloop_common::spool::{Envelope, EnvelopeError, Spool, SpoolError};
use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::PathBuf;

/// Octets over `smtpd.max_message_size` allowed for the trace headers the feeding
/// program put on top of its client's message (the smtpd's `Received` is under 2 KiB):
/// the smtpd has already held its client to the limit, and a message at the limit must
/// not be refused after the upload for the header we added.
pub const TRACE_ALLOWANCE: u64 = 4096;

/// Environment variable naming the queue ID to use.
pub const QUEUE_ID_ENV: &str = "SLOOP_QUEUE_ID";

/// Runs `sloop-queue` with its arguments (without `argv[0]`); returns the queue ID.
pub fn run(args: &[String]) -> Result<String, ToolError> {
    let config_path = parse_args(args)?;
    // One line on stderr, whatever the number of config errors.
    let cfg =
        super::load_config(config_path.as_deref(), exitcode::QQ_CONFIG_ERROR).map_err(|e| {
            ToolError::new(
                e.code,
                e.message.replace(":\n  ", ": ").replace("\n  ", "; "),
            )
        })?;
    sloop_common::logging::init_with("sloop-queue", "queue", &cfg.log);
    let spool = Spool::new(&cfg.server.spool_dir);
    if !spool.exists() {
        spool.ensure_layout().map_err(|e| spool_error(&e))?;
    }
    super::check_room(&cfg, &spool, exitcode::QQ_WRITE_ERROR)?;
    let preset = std::env::var(QUEUE_ID_ENV).ok();
    let mut message = dup_fd(std::io::stdin().as_fd(), "fd 0")?;
    let mut summary = None;
    let envelope_fn = || {
        let env = read_envelope()?;
        summary = Some((env.sender_display(), env.recipients.len()));
        Ok(env)
    };
    let id = commit_streaming(
        &spool,
        &mut message,
        envelope_fn,
        cfg.smtpd.max_message_size + TRACE_ALLOWANCE,
        preset.as_deref(),
    )
    .map_err(|e| inject_error(&e))?;
    if let Some((from, nrcpt)) = summary {
        log::info!("{id}: from={from}, nrcpt={nrcpt} (queued)");
    }
    Ok(id)
}

/// `-c FILE` is the only option (internal programs take their input from fds and env).
fn parse_args(args: &[String]) -> Result<Option<PathBuf>, ToolError> {
    match args {
        [] => Ok(None),
        [flag, file] if flag == "-c" => Ok(Some(PathBuf::from(file))),
        _ => Err(ToolError::new(
            exitcode::QQ_CONFIG_ERROR,
            "usage: sloop-queue [-c FILE] <message >&envelope",
        )),
    }
}

/// A `File` on a duplicate of a standard fd, so reads are unbuffered and large.
fn dup_fd(fd: std::os::fd::BorrowedFd<'_>, what: &str) -> Result<File, ToolError> {
    fd.try_clone_to_owned()
        .map(File::from)
        .map_err(|e| ToolError::new(exitcode::QQ_READ_ERROR, format!("cannot use {what}: {e}")))
}

/// Reads the qmail envelope from fd 1 to EOF and parses it (also `sloop-drop`'s).
pub(super) fn read_envelope() -> Result<Envelope, EnvelopeError> {
    let mut fd1 = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map(File::from)
        .map_err(|e| EnvelopeError::Io(format!("fd 1: {e}")))?;
    let mut bytes = Vec::new();
    fd1.read_to_end(&mut bytes)
        .map_err(|e| EnvelopeError::Io(format!("fd 1: {e}")))?;
    Envelope::parse_qmail(&bytes)
}

/// The qmail-queue exit code of an injection failure.
pub fn inject_error(e: &InjectError) -> ToolError {
    let code = match e {
        InjectError::TooLarge { .. } => exitcode::QQ_PERM_REFUSED,
        InjectError::Envelope(EnvelopeError::AddressTooLong) => exitcode::QQ_ADDRESS_TOO_LONG,
        InjectError::Envelope(EnvelopeError::Format(_)) => exitcode::QQ_ENVELOPE_FORMAT,
        InjectError::Envelope(EnvelopeError::Io(_)) | InjectError::ReadMessage(_) => {
            exitcode::QQ_READ_ERROR
        }
        InjectError::Spool(s) => return spool_error(s),
    };
    ToolError::new(code, e.to_string())
}

/// Writing the file is a write error (53, e.g. disk full); anything else on the spool
/// (creating, renaming, directory fsync) is queue directory trouble (62).
fn spool_error(e: &SpoolError) -> ToolError {
    let code = match e.action {
        "write" | "fsync" => exitcode::QQ_WRITE_ERROR,
        _ => exitcode::QQ_QUEUE_DIR,
    };
    ToolError::new(code, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_qmail_queue() {
        let code = |e: InjectError| inject_error(&e).code;
        assert_eq!(code(InjectError::TooLarge { limit: 1 }), 31);
        assert_eq!(
            code(InjectError::Envelope(EnvelopeError::AddressTooLong)),
            11
        );
        assert_eq!(
            code(InjectError::Envelope(EnvelopeError::Format("x".into()))),
            91
        );
        assert_eq!(
            code(InjectError::Envelope(EnvelopeError::Io("x".into()))),
            54
        );
        let spool = |action| {
            InjectError::Spool(SpoolError {
                path: PathBuf::from("/s"),
                action,
                source: std::io::Error::other("x"),
            })
        };
        assert_eq!(code(spool("write")), 53);
        assert_eq!(code(spool("rename")), 62);
    }

    #[test]
    fn only_dash_c_is_accepted() {
        assert_eq!(parse_args(&[]), Ok(None));
        let args = ["-c".to_string(), "/x.toml".to_string()];
        assert_eq!(parse_args(&args), Ok(Some(PathBuf::from("/x.toml"))));
        assert!(parse_args(&["-v".to_string()]).is_err());
    }
}
