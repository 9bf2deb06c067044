//! `sloop-deliver local|remote [-c FILE]`: a long-lived delivery worker started by
//! `sloop-qmgr` (docs/architecture.md §4; the protocol is common/src/delivery_proto.rs).
//! `sloop-deliver spawner [-c FILE]`: the root local spawner `sloopd` runs when
//! `local.system_users` is on (delivery/src/local/spawner.rs); a local worker that is
//! not root hands its pipes to it and waits for the root worker's exit status.
//!
//! Exit codes: 0 at EOF on stdin; 64 for a bad command line; 78 when the config is
//! missing or invalid (docs/invariants.md G6); 70 after an agent panicked (the job was
//! answered with `defer` first) or when stdin/stdout fail; 71 when the spawner cannot
//! listen; 77 for the spawner not started as root. stdout carries protocol lines only.

use sloop_common::config::ConfigError;
use sloop_common::exitcode::{EX_CONFIG, EX_SOFTWARE, EX_USAGE};
use sloop_common::spool::workers::WorkerLock;
use sloop_common::spool::Spool;
use sloop_common::Config;
use sloop_delivery::local::spawner;
use sloop_delivery::worker::{serve_recording, Agent, Ending};
use std::fmt;
use std::ops::Not;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: sloop-deliver local|remote|spawner [-c CONFIG]";

/// Why the worker stops with a non-zero status: the program's one funnel to an exit
/// code and a message.
#[derive(Debug)]
enum Failure {
    Usage(UsageError),
    Config(ConfigError),
    Stdin(std::io::Error),
    Pipe(std::io::Error),
    Panicked,
    /// `spawner` started by someone other than root.
    SpawnerNotRoot,
    /// The spawner could not serve (its socket).
    Spawner(spawner::SpawnerError),
    /// The root worker the spawner ran for us ended with this status.
    RootWorker(u8),
}

/// What is wrong with the command line.
#[derive(Debug, PartialEq, Eq)]
enum UsageError {
    MissingConfigFile,
    Unexpected(String),
    MissingTransport,
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsageError::MissingConfigFile => f.write_str("-c needs a file"),
            UsageError::Unexpected(a) => write!(f, "unexpected argument {a:?}"),
            UsageError::MissingTransport => {
                f.write_str("missing transport (local, remote or spawner)")
            }
        }
    }
}

impl Failure {
    fn exit_code(&self) -> i32 {
        match self {
            Failure::Usage(_) => EX_USAGE,
            Failure::Config(_) => EX_CONFIG,
            Failure::Stdin(_) | Failure::Pipe(_) | Failure::Panicked => EX_SOFTWARE,
            Failure::SpawnerNotRoot => 77,
            Failure::Spawner(_) => 71,
            Failure::RootWorker(n) => i32::from(*n),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Usage(e) => write!(f, "{e}\n{USAGE}"),
            Failure::Config(e) => write!(f, "{e}"),
            Failure::Stdin(e) => write!(f, "cannot use stdin: {e}"),
            Failure::Pipe(e) => write!(f, "pipe to the queue manager failed: {e}"),
            Failure::Panicked => f.write_str("an agent panicked; the job was deferred"),
            Failure::SpawnerNotRoot => {
                f.write_str("the local spawner must be started as root (by sloopd)")
            }
            Failure::Spawner(e) => write!(f, "local spawner: {e}"),
            Failure::RootWorker(n) => write!(f, "the root local worker exited with status {n}"),
        }
    }
}

fn main() -> ExitCode {
    sloop_common::secure_fs::restrict_umask();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Before logging is set up (usage, config) the message goes to stderr as is.
            match e {
                Failure::Usage(_) | Failure::Config(_) => eprintln!("sloop-deliver: {e}"),
                _ => log::error!("{e}"),
            }
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}

fn run() -> Result<(), Failure> {
    let (transport, config_arg) = parse_args(std::env::args().skip(1)).map_err(Failure::Usage)?;
    let path = sloop_common::config::resolve_path(config_arg.as_deref());
    let cfg = Config::load_inherited(&path).map_err(Failure::Config)?;
    let syslog_name = match transport.as_str() {
        "local" => "local",
        "spawner" => "spawn",
        _ => "smtp",
    };
    sloop_common::logging::init_with("sloop-deliver", syslog_name, &cfg.log);
    let root = nix::unistd::geteuid().is_root();
    if transport == "spawner" {
        if !root {
            return Err(Failure::SpawnerNotRoot);
        }
        return spawner::serve(&cfg, &cfg.program("sloop-deliver")).map_err(Failure::Spawner);
    }
    let spool = Spool::new(cfg.server.spool_dir.clone());
    // A root worker started by the local spawner leaves the spool to its owner: files
    // it created there would be root's, which the queue manager cannot read. Its
    // stand-in (the process the queue manager started) holds the lock meanwhile, and
    // the queue manager records its results as they arrive.
    let spool_ours = root_but_not_spool_owner(&spool).not();
    // Held until exit: a queue manager starting after ours died waits for it
    // (spool/workers.rs). Without it we still deliver; the cost is a possible duplicate.
    let _lock = match spool_ours.then(|| WorkerLock::hold(&spool)) {
        Some(Ok(l)) => Some(l),
        Some(Err(e)) => {
            log::warn!("{transport} worker: {e}");
            None
        }
        None => None,
    };
    if transport == "local" && cfg.local.system_users && !root {
        if let Some(status) = spawner::hand_off() {
            return match status {
                0 => Ok(()),
                n => Err(Failure::RootWorker(n)),
            };
        }
    }
    let mut agent: Box<dyn Agent> = match transport.as_str() {
        "local" => Box::new(sloop_delivery::local::LocalAgent::new(cfg)),
        _ => Box::new(sloop_delivery::remote::RemoteAgent::new(cfg)),
    };
    // A plain File on fd 0, not Stdin: Stdin's own buffer would hide queued job lines
    // from the poll(2) the worker loop waits in.
    let input = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .map_err(Failure::Stdin)?;
    // Buffered: a batch's result lines go out in one write when the loop flushes.
    let output = std::io::BufWriter::new(std::io::stdout().lock());
    match serve_recording(agent.as_mut(), input, output, spool_ours.then_some(&spool))
        .map_err(Failure::Pipe)?
    {
        Ending::Eof => Ok(()),
        Ending::Panicked => Err(Failure::Panicked),
    }
}

/// `(transport, -c FILE)` from the arguments.
fn parse_args(
    mut args: impl Iterator<Item = String>,
) -> Result<(String, Option<PathBuf>), UsageError> {
    let mut transport = None;
    let mut config = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "-c" => {
                let file = args.next().ok_or(UsageError::MissingConfigFile)?;
                config = Some(PathBuf::from(file));
            }
            "local" | "remote" | "spawner" if transport.is_none() => transport = Some(a),
            _ => return Err(UsageError::Unexpected(a)),
        }
    }
    let transport = transport.ok_or(UsageError::MissingTransport)?;
    Ok((transport, config))
}

/// True when this process is root and the spool's state directories belong to
/// another user (`server.user`): then it must create nothing there.
fn root_but_not_spool_owner(spool: &Spool) -> bool {
    use std::os::unix::fs::MetadataExt;
    nix::unistd::geteuid().is_root()
        && std::fs::metadata(spool.root().join("status")).is_ok_and(|m| m.uid() != 0)
}
