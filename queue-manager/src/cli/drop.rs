//! `sloop-drop`: local submission for users who may not write the queue (Postfix's
//! postdrop; docs/sloop-drop.8.md, docs/security.md). Installed set-group-ID to the
//! submission group (`server.drop_group`), whose only power is to add a file to the
//! spool's `maildrop/` and to connect to `public/showq`.
//!
//! `sloop-drop [-c FILE]` takes the message on fd 0 and the envelope on fd 1 with
//! `sloop-queue`'s contract and exit codes, and writes them as one maildrop file
//! (`spool::maildrop`), fsync'd before it exits 0; `sloop-pickup` commits it.
//! `sloop-drop [-c FILE] mailq` prints the queue listing `sloop-pickup` serves on
//! `public/showq`; `sloop-drop [-c FILE] flush` asks it to retry the deferred mail now
//! (`sendmail -q` for a user who may not write the spool; any local user may, as with
//! Postfix's default `authorized_flush_users`).
//!
//! The configuration is read with the caller's own group (the effective group is set
//! back to the real one while the file is opened and parsed), so `-c` or
//! `$SLOOP_CONFIG` of the caller's choosing gains them nothing: the group is used only
//! to create a new file in a `maildrop/` and to connect to a `showq` socket.

use super::inject::{inject_error, read_envelope, QUEUE_ID_ENV};
use super::ToolError;
use nix::unistd::{getegid, getgid, getuid, setegid};
use sloop_common::exitcode;
use sloop_common::spool::{maildrop, Spool};
use std::fs::File;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

/// How long `mailq` waits for the listing.
const SHOWQ_TIMEOUT: Duration = Duration::from_secs(60);

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
struct Args {
    config: Option<PathBuf>,
    /// `mailq` or `flush`: a request to `public/showq` instead of a message.
    request: Option<ShowqRequest>,
}

/// What a client asks of `public/showq`: the request line it writes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShowqRequest {
    /// `list`: the queue listing (also what a client that writes nothing gets).
    List,
    /// `flush`: move the deferred mail back to `incoming/` and wake the queue manager.
    Flush,
}

impl ShowqRequest {
    /// The request line's word.
    pub fn word(self) -> &'static str {
        match self {
            ShowqRequest::List => "list",
            ShowqRequest::Flush => "flush",
        }
    }
}

/// Runs `sloop-drop` with its arguments (without `argv[0]`).
pub fn run(args: &[String]) -> Result<(), ToolError> {
    let args = parse_args(args)?;
    let code = if args.request.is_some() {
        exitcode::EX_CONFIG
    } else {
        exitcode::QQ_CONFIG_ERROR
    };
    let cfg =
        with_real_group(|| super::load_config(args.config.as_deref(), code))?.map_err(|e| {
            ToolError::new(
                e.code,
                e.message.replace(":\n  ", ": ").replace("\n  ", "; "),
            )
        })?;
    sloop_common::logging::init("sloop-drop", cfg.log_level);
    let spool = Spool::new(&cfg.server.spool_dir);
    if let Some(request) = args.request {
        return showq(&spool, request);
    }
    let preset = std::env::var(QUEUE_ID_ENV).ok();
    let mut message = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map(File::from)
        .map_err(|e| ToolError::new(exitcode::QQ_READ_ERROR, format!("cannot use fd 0: {e}")))?;
    let mut summary = None;
    let envelope_fn = || {
        let env = read_envelope()?;
        summary = Some((env.sender_display(), env.recipients.len()));
        Ok(env)
    };
    let id = maildrop::drop_message(
        &spool,
        &mut message,
        envelope_fn,
        cfg.smtpd.max_message_size,
        preset.as_deref(),
    )
    .map_err(|e| inject_error(&e))?;
    if let Some((from, nrcpt)) = summary {
        log::info!(
            "{id}: uid={} from={from}, nrcpt={nrcpt} (maildrop)",
            getuid()
        );
    }
    Ok(())
}

/// `[-c FILE] [mailq|flush]`: internal programs take nothing else.
fn parse_args(args: &[String]) -> Result<Args, ToolError> {
    let usage = || {
        ToolError::new(
            exitcode::QQ_CONFIG_ERROR,
            "usage: sloop-drop [-c FILE] <message >&envelope | sloop-drop [-c FILE] mailq|flush",
        )
    };
    let mut out = Args {
        config: None,
        request: None,
    };
    let mut rest = args.iter();
    while let Some(a) = rest.next() {
        match a.as_str() {
            "-c" if out.config.is_none() => {
                out.config = Some(PathBuf::from(rest.next().ok_or_else(usage)?));
            }
            "mailq" if out.request.is_none() => out.request = Some(ShowqRequest::List),
            "flush" if out.request.is_none() => out.request = Some(ShowqRequest::Flush),
            _ => return Err(usage()),
        }
    }
    Ok(out)
}

/// Runs `f` with the effective group set back to the real group, then restores the
/// set-group-ID group (kept as the saved group).
fn with_real_group<T>(f: impl FnOnce() -> T) -> Result<T, ToolError> {
    let (real, effective) = (getgid(), getegid());
    let switch = |to| {
        setegid(to).map_err(|e| {
            ToolError::new(
                exitcode::QQ_BUG,
                format!("cannot set the effective group to {to}: {}", e.desc()),
            )
        })
    };
    if real == effective {
        return Ok(f());
    }
    switch(real)?;
    let out = f();
    switch(effective)?;
    Ok(out)
}

/// Sends `request` on `public/showq` and copies what `sloop-pickup` answers to stdout.
fn showq(spool: &Spool, request: ShowqRequest) -> Result<(), ToolError> {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    let path = spool.showq_socket();
    let down = |e: std::io::Error| {
        ToolError::new(
            exitcode::EX_UNAVAILABLE,
            format!(
                "queue report unavailable ({}: {e}): is sloopd running?",
                path.display()
            ),
        )
    };
    let mut stream = UnixStream::connect(&path).map_err(down)?;
    stream.set_read_timeout(Some(SHOWQ_TIMEOUT)).map_err(down)?;
    stream
        .set_write_timeout(Some(SHOWQ_TIMEOUT))
        .map_err(down)?;
    stream
        .write_all(format!("{}\n", request.word()).as_bytes())
        .map_err(down)?;
    stream.shutdown(std::net::Shutdown::Write).map_err(down)?;
    let mut out = std::io::stdout().lock();
    std::io::copy(&mut stream, &mut out).map_err(down)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Args, ToolError> {
        parse_args(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn only_a_config_and_mailq_are_accepted() {
        assert_eq!(
            args(&[]),
            Ok(Args {
                config: None,
                request: None
            })
        );
        let a = args(&["-c", "/x.toml", "mailq"]).unwrap();
        assert_eq!(a.config, Some(PathBuf::from("/x.toml")));
        assert_eq!(a.request, Some(ShowqRequest::List));
        assert_eq!(args(&["flush"]).unwrap().request, Some(ShowqRequest::Flush));
        assert!(args(&["-c"]).is_err());
        assert!(args(&["-v"]).is_err());
        assert!(args(&["mailq", "mailq"]).is_err());
        assert!(args(&["mailq", "flush"]).is_err());
    }
}
