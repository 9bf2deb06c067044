//! `sloop-sendmail`: the sendmail(8) interface that cron, mail(1) and scripts use
//! (docs/sloop-sendmail.1.md). Invoked as `mailq` it lists the queue.
//!
//! A message is read from stdin (`sendmail_message`), completed with `From`, `Date` and
//! `Message-ID: <ID@hostname>` where missing, and handed with the qmail-queue contract
//! (message on its fd 0, envelope on its fd 1) to `sloop-queue` when the caller owns
//! the spool, else to the set-group-ID `sloop-drop`, which leaves it in `maildrop/` for
//! `sloop-pickup` (docs/security.md): so every local user can send mail, and no queue
//! file is ever owned by anyone but the spool owner, root's included. The exit code of
//! either becomes a sysexits code: 0 queued; address errors EX_NOUSER (67); other
//! permanent refusals and envelope format errors EX_DATAERR (65); anything temporary, a
//! crash or a signal EX_TEMPFAIL (75), meaning "not queued, try again".
//!
//! The listing (`mailq`, `-bp`) reads the spool directly for root and the spool owner;
//! anybody else gets it from `sloop-pickup` through `sloop-drop mailq`.
//!
//! Invoked as `newaliases` (or with `-bi`) it parses `local.aliases` and says how many
//! entries it holds, as Postfix's does (`newaliases: /etc/aliases: 3 aliases`); a file
//! with errors lists each with its line and exits EX_DATAERR. Sloop reads the text file
//! directly (it is re-read when its mtime changes), so there is no database to rebuild.

use super::drop::ShowqRequest;
use super::operator::{run_queue, QueueCmd};
use super::sendmail_args::{self, Mode, Options};
use super::sendmail_message::{Message, Missing};
use super::{load_config, ToolError};
use sloop_common::config::Config;
use sloop_common::exitcode::{self, queue_verdict, QueueVerdict};
use sloop_common::spool::{queue_id, Envelope, QueueState, Recipient, Ret, Spool};
use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};

/// Runs sloop-sendmail with argv (`argv[0]` included).
pub fn run(argv: &[String]) -> Result<(), ToolError> {
    let name = argv
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a))
        .unwrap_or("");
    let mut opts = sendmail_args::parse(argv.get(1..).unwrap_or(&[]), name.ends_with("mailq"))
        .map_err(|e| ToolError::new(exitcode::EX_USAGE, e.to_string()))?;
    if name.ends_with("newaliases") {
        opts.mode = Mode::Newaliases;
    }
    let cfg = load_config(opts.config.as_deref(), exitcode::EX_CONFIG)?;
    let spool = Spool::new(&cfg.server.spool_dir);
    let mut out = std::io::stdout().lock();
    match opts.mode {
        Mode::List if !may_read(&spool) => through_drop(&cfg, ShowqRequest::List),
        Mode::List => run_queue(&QueueCmd::List { json: false }, &spool, &mut out),
        Mode::Flush if !may_read(&spool) => through_drop(&cfg, ShowqRequest::Flush),
        Mode::Flush => run_queue(&QueueCmd::Flush, &spool, &mut out),
        Mode::Newaliases => newaliases(&cfg, &mut out),
        Mode::Deliver => {
            // Logged only to syslog: on stderr the line would reach cron's mail.
            if cfg.log.target == sloop_common::config::LogTarget::Syslog {
                sloop_common::logging::init_with("sloop-sendmail", "pickup", &cfg.log);
            }
            check_room(&cfg, &spool)?;
            let stdin = std::io::stdin().lock();
            let id = deliver(&cfg, &opts, stdin)?;
            if opts.verbose {
                eprintln!("sloop-sendmail: queued as {id}");
            }
            Ok(())
        }
    }
}

/// Checks `local.aliases` and prints how many entries it holds.
fn newaliases(cfg: &Config, out: &mut impl Write) -> Result<(), ToolError> {
    let Some(path) = &cfg.local.aliases else {
        return Err(ToolError::new(
            exitcode::EX_CONFIG,
            "local.aliases is not set in the configuration: there is no aliases file",
        ));
    };
    let aliases = sloop_common::aliases::Aliases::load(path)
        .map_err(|e| ToolError::new(exitcode::EX_DATAERR, e.to_string()))?;
    let n = aliases.len();
    writeln!(
        out,
        "newaliases: {}: {n} alias{}",
        path.display(),
        if n == 1 { "" } else { "es" }
    )
    .map_err(|e| ToolError::new(exitcode::EX_IOERR, format!("cannot write: {e}")))
}

/// Refuses with a temporary failure (EX_TEMPFAIL) when the spool is below
/// `queue.min_free` (after giving back the recycling pool), before reading anything.
fn check_room(cfg: &Config, spool: &Spool) -> Result<(), ToolError> {
    super::check_room(cfg, spool, exitcode::EX_TEMPFAIL)
}

/// Reads the message from `input`, completes it and queues it; returns the queue ID.
pub fn deliver(
    cfg: &Config,
    opts: &Options,
    input: impl std::io::BufRead,
) -> Result<String, ToolError> {
    let mut msg = Message::read(input, opts.ignore_dots)
        .map_err(|e| ToolError::new(exitcode::EX_IOERR, format!("cannot read message: {e}")))?;
    let host = &cfg.server.hostname;
    let mut recipients = opts.recipients.clone();
    if opts.extract {
        recipients.extend(msg.recipients());
    }
    msg.remove_bcc();
    let recipients: Vec<String> = recipients.iter().map(|r| qualify(r, host)).collect();
    if recipients.is_empty() {
        return Err(ToolError::new(
            exitcode::EX_USAGE,
            "no recipient addresses (give them as arguments, or use -t)",
        ));
    }
    if let Some(bad) = recipients.iter().find(|r| !plausible(r)) {
        return Err(ToolError::new(
            exitcode::EX_NOUSER,
            format!("bad recipient address: {bad:?}"),
        ));
    }
    let sender = match &opts.sender {
        Some(s) if s.is_empty() => String::new(),
        Some(s) => qualify(s, host),
        None => format!("{}@{host}", invoking_user()),
    };
    let id = queue_id::new_id();
    msg.add_missing(&Missing {
        from: from_header(&sender, opts.full_name.as_deref(), host),
        date: sloop_common::logging::rfc5322_date(super::queue_view::now()),
        message_id: format!("<{id}@{host}>"),
    });
    let envelope = envelope(opts, sender, recipients)?;
    queue(
        cfg,
        &id,
        &msg.to_bytes(),
        &envelope.to_qmail(),
        opts.verbose,
    )?;
    log::info!(
        "{id}: uid={} from=<{}>",
        nix::unistd::getuid(),
        envelope.sender
    );
    Ok(id)
}

fn envelope(
    opts: &Options,
    sender: String,
    recipients: Vec<String>,
) -> Result<Envelope, ToolError> {
    let mut env = Envelope::new(
        sender,
        recipients
            .into_iter()
            .map(|a| Recipient {
                notify: opts.notify.clone(),
                ..Recipient::new(a)
            })
            .collect(),
    );
    env.envid = opts.envid.clone();
    env.ret = match opts.ret.as_deref() {
        None => None,
        Some("FULL") => Some(Ret::Full),
        Some("HDRS") => Some(Ret::Hdrs),
        Some(other) => {
            return Err(ToolError::new(
                exitcode::EX_USAGE,
                format!("-R {other}: expected full or hdrs"),
            ))
        }
    };
    Ok(env)
}

/// The program that queues for this caller: `sloop-queue` for the spool's owner,
/// `sloop-drop` for everybody else (root included). When a `[[milter]]` lists `local`,
/// the owner's mail goes through `sloop-drop` too, so that `sloop-pickup` runs those
/// milters on every message from sendmail (cron's mail is signed whoever runs it),
/// as Postfix runs `non_smtpd_milters` on all of it.
pub fn submit_program(cfg: &Config, spool: &Spool) -> &'static str {
    let local_milters = cfg
        .hooks
        .milters_for(sloop_common::config::HookListener::Local)
        .next()
        .is_some();
    if owns_spool(spool) && !local_milters {
        "sloop-queue"
    } else {
        "sloop-drop"
    }
}

/// True when our effective user owns `incoming/`, or there is no spool yet (then
/// `sloop-queue` creates it, as the one user every program runs as).
fn owns_spool(spool: &Spool) -> bool {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(spool.state_dir(QueueState::Incoming)) {
        Ok(m) => m.uid() == nix::unistd::geteuid().as_raw(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound && !spool.root().exists(),
    }
}

/// Root and the spool owner read the queue themselves.
fn may_read(spool: &Spool) -> bool {
    nix::unistd::geteuid().is_root() || owns_spool(spool)
}

/// `mailq` or `sendmail -q` for a user who may not read the spool: `sloop-drop mailq`
/// prints the listing `sloop-pickup` serves, `sloop-drop flush` asks it to flush.
fn through_drop(cfg: &Config, request: ShowqRequest) -> Result<(), ToolError> {
    let program = cfg.program("sloop-drop");
    let word = match request {
        ShowqRequest::List => "mailq",
        ShowqRequest::Flush => "flush",
    };
    let status = Command::new(&program)
        .arg("-c")
        .arg(&cfg.file)
        .arg(word)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| {
            ToolError::new(
                exitcode::EX_OSERR,
                format!("cannot run {}: {e}", program.display()),
            )
        })?;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(ToolError::new(
            code,
            match request {
                ShowqRequest::List => "queue listing unavailable",
                ShowqRequest::Flush => "queue flush unavailable",
            },
        )),
        None => Err(ToolError::new(
            exitcode::EX_TEMPFAIL,
            "sloop-drop killed by a signal",
        )),
    }
}

/// Runs sloop-queue or sloop-drop: message on its fd 0, then envelope on its fd 1 (a
/// pipe we write).
fn queue(
    cfg: &Config,
    id: &str,
    message: &[u8],
    envelope: &[u8],
    verbose: bool,
) -> Result<(), ToolError> {
    let name = submit_program(cfg, &Spool::new(&cfg.server.spool_dir));
    let program = cfg.program(name);
    let os_err = |what: &str, e: &dyn std::fmt::Display| {
        ToolError::new(
            exitcode::EX_OSERR,
            format!("cannot {what} {}: {e}", program.display()),
        )
    };
    let (env_read, env_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| os_err("make a pipe for", &e))?;
    // The Command (holding our copy of the pipe's read end) is dropped right after the
    // spawn, so a sloop-queue that exits early makes our writes fail instead of block.
    let mut child = Command::new(&program)
        .arg("-c")
        .arg(&cfg.file)
        .env(super::inject::QUEUE_ID_ENV, id)
        .stdin(Stdio::piped())
        .stdout(Stdio::from(env_read))
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| os_err("run", &e))?;
    // A write error means sloop-queue stopped reading (it refused the message): its exit
    // status says why, so the error itself is not reported.
    if let Some(mut fd0) = child.stdin.take() {
        let _ = fd0.write_all(message);
    }
    let _ = std::fs::File::from(env_write).write_all(envelope);
    // sloop-queue writes a line or two at most, well under a pipe's buffer, so reading
    // its stderr after the wait cannot deadlock.
    let status = child.wait().map_err(|e| os_err("wait for", &e))?;
    let mut diagnostics = String::new();
    if let Some(mut fd2) = child.stderr.take() {
        let _ = fd2.read_to_string(&mut diagnostics);
    }
    let result = queue_status(name, status);
    // Its log line is for the mail log; a user sees it only with -v or on failure.
    if verbose || result.is_err() {
        eprint!("{diagnostics}");
    }
    result
}

/// The exit status of `program` (sloop-queue or sloop-drop, which share qmail-queue's
/// exit codes) as a sysexits result.
pub fn queue_status(program: &str, status: ExitStatus) -> Result<(), ToolError> {
    use std::os::unix::process::ExitStatusExt;
    let Some(code) = status.code() else {
        let sig = status.signal().unwrap_or(0);
        return Err(ToolError::new(
            exitcode::EX_TEMPFAIL,
            format!("{program} killed by signal {sig}; message not queued, try again"),
        ));
    };
    let (sysexit, what) = match (code, queue_verdict(code)) {
        (_, QueueVerdict::Committed) => return Ok(()),
        (exitcode::QQ_ADDRESS_TOO_LONG, _) => (exitcode::EX_NOUSER, "address refused"),
        (exitcode::QQ_ENVELOPE_FORMAT, _) | (_, QueueVerdict::Permanent) => {
            (exitcode::EX_DATAERR, "message refused")
        }
        (_, QueueVerdict::Temporary) => (exitcode::EX_TEMPFAIL, "message not queued, try again"),
    };
    Err(ToolError::new(
        sysexit,
        format!("{what} ({program} exit {code})"),
    ))
}

/// `user` -> `user@host`; addresses with a domain are kept.
fn qualify(addr: &str, host: &str) -> String {
    if addr.contains('@') {
        addr.to_string()
    } else {
        format!("{addr}@{host}")
    }
}

/// No spaces, controls or brackets: what can go into an SMTP path.
fn plausible(addr: &str) -> bool {
    !addr.is_empty()
        && !addr.starts_with('@')
        && !addr.ends_with('@')
        && !addr
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '<' | '>' | ','))
}

/// `From:` value: `"Full Name" <sender>`, or the sender alone.
fn from_header(sender: &str, full_name: Option<&str>, host: &str) -> String {
    let addr = if sender.is_empty() {
        format!("MAILER-DAEMON@{host}")
    } else {
        sender.to_string()
    };
    match full_name {
        Some(name) if !name.is_empty() => {
            let clean: String = name
                .chars()
                .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
                .collect();
            format!("\"{clean}\" <{addr}>")
        }
        _ => addr,
    }
}

/// The login name of the real uid, else `$USER`, else `uid<N>`.
fn invoking_user() -> String {
    let uid = nix::unistd::getuid();
    if let Ok(Some(user)) = nix::unistd::User::from_uid(uid) {
        return user.name;
    }
    match std::env::var("USER") {
        Ok(u) if !u.is_empty() && plausible(&u) => u,
        _ => format!("uid{uid}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn queue_exit_codes_map_to_sysexits() {
        let code = |c: i32| {
            queue_status("sloop-queue", ExitStatus::from_raw(c << 8))
                .err()
                .map(|e| e.code)
        };
        assert_eq!(code(0), None);
        assert_eq!(code(11), Some(exitcode::EX_NOUSER));
        assert_eq!(code(31), Some(exitcode::EX_DATAERR));
        assert_eq!(code(91), Some(exitcode::EX_DATAERR));
        assert_eq!(code(53), Some(exitcode::EX_TEMPFAIL));
        assert_eq!(code(81), Some(exitcode::EX_TEMPFAIL));
        let killed = queue_status("sloop-drop", ExitStatus::from_raw(9))
            .err()
            .map(|e| e.code);
        assert_eq!(killed, Some(exitcode::EX_TEMPFAIL));
    }

    #[test]
    fn addresses_and_from() {
        assert_eq!(qualify("root", "h.test"), "root@h.test");
        assert_eq!(qualify("a@b", "h.test"), "a@b");
        assert!(plausible("a@b.test"));
        assert!(!plausible("a b@c"));
        assert!(!plausible("a@b\r\n"));
        assert_eq!(
            from_header("a@b", Some("Cron \"D\""), "h"),
            "\"Cron D\" <a@b>"
        );
        assert_eq!(from_header("", None, "h"), "MAILER-DAEMON@h");
    }
}
