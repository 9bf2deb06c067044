//! `sloop-deliver local|remote [-c FILE]`: a long-lived delivery worker started by
//! `sloop-qmgr` (docs/architecture.md §4; the protocol is common/src/delivery_proto.rs).
//!
//! Exit codes: 0 at EOF on stdin; 64 for a bad command line; 78 when the config is
//! missing or invalid (docs/invariants.md G6); 70 after an agent panicked (the job was answered
//! with `defer` first) or when stdin/stdout fail. stdout carries protocol lines only.

use sloop_common::config::ConfigError;
use sloop_common::exitcode::{EX_CONFIG, EX_SOFTWARE, EX_USAGE};
use sloop_common::Config;
use sloop_delivery::worker::{serve, Agent, Ending};
use std::fmt;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: sloop-deliver local|remote [-c CONFIG]";

/// Why the worker stops with a non-zero status: the program's one funnel to an exit
/// code and a message.
#[derive(Debug)]
enum Failure {
    Usage(UsageError),
    Config(ConfigError),
    Stdin(std::io::Error),
    Pipe(std::io::Error),
    Panicked,
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
            UsageError::MissingTransport => f.write_str("missing transport (local or remote)"),
        }
    }
}

impl Failure {
    fn exit_code(&self) -> i32 {
        match self {
            Failure::Usage(_) => EX_USAGE,
            Failure::Config(_) => EX_CONFIG,
            Failure::Stdin(_) | Failure::Pipe(_) | Failure::Panicked => EX_SOFTWARE,
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
        }
    }
}

fn main() -> ExitCode {
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
    sloop_common::logging::init("sloop-deliver", cfg.log_level);
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
    match serve(agent.as_mut(), input, output).map_err(Failure::Pipe)? {
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
            "local" | "remote" if transport.is_none() => transport = Some(a),
            _ => return Err(UsageError::Unexpected(a)),
        }
    }
    let transport = transport.ok_or(UsageError::MissingTransport)?;
    Ok((transport, config))
}
