//! `|command` alias targets: the message is piped to `/bin/sh -c command`.
//!
//! The command gets the message (with the trace headers) on stdin and a clean
//! environment, as Postfix's local(8) gives it: `PATH`, `HOME`, `USER`, `LOGNAME` and
//! `SHELL` of the user it runs as, `SENDER`, `RECIPIENT`, `LOCAL`, `EXTENSION`,
//! `DOMAIN` and `ORIGINAL_RECIPIENT` (nothing of the worker's own), in its own
//! process group, in the user's home directory when it has one (else `/`).
//!
//! Exit codes are read as Postfix reads them (sysexits.h): 0 delivered;
//! EX_OSERR (71), EX_IOERR (74), EX_TEMPFAIL (75) and EX_CONFIG (78) defer; any other
//! exit bounces, with the first line the command wrote (stdout or stderr, at most
//! [`MAX_OUTPUT`] octets kept). Killed by a signal, or still running after the time
//! limit (its whole process group is then killed): deferred.
//!
//! Commands run as the user privs.rs chose (the caller switches to it first) and only
//! come from a trusted source (see expand.rs).

use crate::result::RcptResult;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Octets of the command's output kept for the result text.
pub const MAX_OUTPUT: usize = 1024;

/// What the command is told about the delivery.
#[derive(Debug, Clone)]
pub struct PipeEnv {
    pub sender: String,
    pub recipient: String,
    pub original: String,
    /// The user the command runs as: name, home directory and login shell.
    pub user: String,
    pub home: std::path::PathBuf,
    pub shell: std::path::PathBuf,
    /// The recipient's address extension (`tag` of `user+tag`), or empty.
    pub extension: String,
}

/// Runs `command` with `prefix` + `message` on stdin.
pub fn run(
    command: &str,
    env: &PipeEnv,
    prefix: &[u8],
    message: &mut (dyn Read + Send),
    timeout: Duration,
) -> RcptResult {
    let (local, domain) = env
        .recipient
        .rsplit_once('@')
        .unwrap_or((env.recipient.as_str(), ""));
    let cwd = if env.home.is_dir() {
        env.home.as_path()
    } else {
        std::path::Path::new("/")
    };
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", &env.home)
        .env("USER", &env.user)
        .env("LOGNAME", &env.user)
        .env("SHELL", &env.shell)
        .env("SENDER", &env.sender)
        .env("RECIPIENT", &env.recipient)
        .env("ORIGINAL_RECIPIENT", &env.original)
        .env("LOCAL", local)
        .env("EXTENSION", &env.extension)
        .env("DOMAIN", domain)
        .current_dir(cwd)
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return RcptResult::defer("4.3.0", format!("cannot run /bin/sh: {e}")),
    };
    let pgid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
    let output = collect_output(&mut child);
    let fed = std::thread::scope(|s| {
        let stdin = child.stdin.take();
        let feeder = s.spawn(move || feed(stdin, prefix, message));
        let status = wait_with_timeout(&mut child, timeout, pgid);
        (status, feeder.join().unwrap_or(Ok(())))
    });
    let text = output
        .recv_timeout(Duration::from_secs(1))
        .unwrap_or_default();
    verdict(command, fed.0, &text)
}

/// Writes the message; a command that stops reading early is not an error by itself.
fn feed(
    stdin: Option<std::process::ChildStdin>,
    prefix: &[u8],
    message: &mut (dyn Read + Send),
) -> io::Result<()> {
    let Some(mut stdin) = stdin else {
        return Ok(());
    };
    let r = stdin
        .write_all(prefix)
        .and_then(|()| io::copy(message, &mut stdin).map(|_| ()));
    match r {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Reads stdout and stderr in one thread each; the first [`MAX_OUTPUT`] octets of
/// stdout then stderr come back once both are closed.
fn collect_output(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let out = child
        .stdout
        .take()
        .map(|o| Box::new(o) as Box<dyn Read + Send>);
    let err = child
        .stderr
        .take()
        .map(|e| Box::new(e) as Box<dyn Read + Send>);
    let readers: Vec<_> = [out, err]
        .into_iter()
        .flatten()
        .map(|s| std::thread::spawn(move || drain(s)))
        .collect();
    std::thread::spawn(move || {
        let mut text = Vec::new();
        for r in readers {
            text.extend(r.join().unwrap_or_default());
        }
        text.truncate(MAX_OUTPUT);
        let _ = tx.send(String::from_utf8_lossy(&text).into_owned());
    });
    rx
}

/// Keeps the first [`MAX_OUTPUT`] octets of a stream and discards the rest.
fn drain(mut s: Box<dyn Read + Send>) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = (&mut s).take(MAX_OUTPUT as u64).read_to_end(&mut buf);
    let _ = io::copy(&mut s, &mut io::sink());
    buf
}

/// Waits for the child; past `timeout` kills its process group. `None`: timed out.
fn wait_with_timeout(
    child: &mut std::process::Child,
    timeout: Duration,
    pgid: Pid,
) -> Option<io::Result<ExitStatus>> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(Ok(status)),
            Ok(None) if std::time::Instant::now() >= deadline => {
                let _ = killpg(pgid, Signal::SIGKILL);
                let _ = child.wait();
                return None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Some(Err(e)),
        }
    }
}

/// The result for an exit status and the command's output.
fn verdict(command: &str, status: Option<io::Result<ExitStatus>>, output: &str) -> RcptResult {
    let first = output
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let said = if first.is_empty() {
        String::new()
    } else {
        format!(": {first}")
    };
    let cmd: String = command.chars().take(60).collect();
    let r = match status {
        None => RcptResult::defer("4.3.0", format!("command time limit exceeded: {cmd}")),
        Some(Err(e)) => RcptResult::defer("4.3.0", format!("cannot wait for command {cmd}: {e}")),
        Some(Ok(s)) => match (s.code(), s.signal()) {
            (Some(0), _) => RcptResult::ok("2.0.0", format!("delivered to command: {cmd}")),
            (Some(c @ (71 | 74 | 75 | 78)), _) => {
                RcptResult::defer("4.3.0", format!("command {cmd} deferred (exit {c}){said}"))
            }
            (Some(c), _) => {
                RcptResult::fail("5.3.0", format!("command {cmd} failed with exit {c}{said}"))
            }
            (None, sig) => RcptResult::defer(
                "4.3.0",
                format!("command {cmd} killed by signal {}", sig.unwrap_or(0)),
            ),
        },
    };
    r.via("local")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use sloop_common::spool::status::Outcome;

    fn env() -> PipeEnv {
        PipeEnv {
            sender: "s@x.test".into(),
            recipient: "r@y.test".into(),
            original: "o@y.test".into(),
            user: "u".into(),
            home: "/".into(),
            shell: "/bin/sh".into(),
            extension: "ext".into(),
        }
    }

    fn go(cmd: &str, timeout: Duration) -> RcptResult {
        run(cmd, &env(), b"H: 1\n", &mut &b"body\n"[..], timeout)
    }

    #[test]
    fn exit_codes_map_to_outcomes() {
        let t = Duration::from_secs(10);
        assert_eq!(go("cat >/dev/null", t).outcome, Outcome::Ok);
        let d = go("echo busy; exit 75", t);
        assert_eq!(d.outcome, Outcome::Defer);
        assert!(d.text.contains("busy"), "{}", d.text);
        let f = go("echo nope >&2; exit 1", t);
        assert_eq!((f.outcome, f.dsn.as_str()), (Outcome::Fail, "5.3.0"));
        assert!(f.text.contains("nope"), "{}", f.text);
        assert_eq!(go("kill -9 $$", t).outcome, Outcome::Defer);
        assert_eq!(go("exit 74", t).outcome, Outcome::Defer, "EX_IOERR");
        assert_eq!(go("exit 78", t).outcome, Outcome::Defer, "EX_CONFIG");
        assert_eq!(go("exit 67", t).outcome, Outcome::Fail, "EX_NOUSER");
    }

    #[test]
    fn the_command_sees_message_and_environment() {
        let dir = std::env::temp_dir().join(format!("sloop-pipe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out");
        let cmd = format!(
            "cat > {0}; echo \"$SENDER $RECIPIENT $LOCAL $DOMAIN $HOME $USER $EXTENSION\" >> {0}",
            out.display()
        );
        assert_eq!(go(&cmd, Duration::from_secs(10)).outcome, Outcome::Ok);
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(text, "H: 1\nbody\ns@x.test r@y.test r y.test / u ext\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_hanging_command_is_killed() {
        let r = go("sleep 30", Duration::from_millis(200));
        assert_eq!(r.outcome, Outcome::Defer);
        assert!(r.text.contains("time limit"), "{}", r.text);
    }
}
