//! `sloop-deliver local|remote [-c FILE]`: a long-lived delivery worker started by
//! `sloop-qmgr` (docs/architecture.md §4; the protocol is common/src/delivery_proto.rs).
//!
//! Exit codes: 0 at EOF on stdin; 64 for a bad command line; 78 when the config is
//! missing or invalid (docs/invariants.md G6); 70 after an agent panicked (the job was answered
//! with `defer` first) or when stdin/stdout fail. stdout carries protocol lines only.

use sloop_common::exitcode::{EX_CONFIG, EX_SOFTWARE, EX_USAGE};
use sloop_common::Config;
use sloop_delivery::worker::{serve, Agent, Ending};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: sloop-deliver local|remote [-c CONFIG]";

fn main() -> ExitCode {
    let (transport, config_arg) = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sloop-deliver: {e}\n{USAGE}");
            return code(EX_USAGE);
        }
    };
    let path = sloop_common::config::resolve_path(config_arg.as_deref());
    let cfg = match Config::load_inherited(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sloop-deliver: {e}");
            return code(EX_CONFIG);
        }
    };
    sloop_common::logging::init("sloop-deliver", cfg.log_level);
    let mut agent: Box<dyn Agent> = match transport.as_str() {
        "local" => Box::new(sloop_delivery::local::LocalAgent::new(cfg)),
        _ => Box::new(sloop_delivery::remote::RemoteAgent::new(cfg)),
    };
    // A plain File on fd 0, not Stdin: Stdin's own buffer would hide queued job lines
    // from the poll(2) the worker loop waits in.
    let input = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => std::fs::File::from(fd),
        Err(e) => {
            log::error!("{transport} worker: cannot use stdin: {e}");
            return code(EX_SOFTWARE);
        }
    };
    // Buffered: a batch's result lines go out in one write when the loop flushes.
    let output = std::io::BufWriter::new(std::io::stdout().lock());
    match serve(agent.as_mut(), input, output) {
        Ok(Ending::Eof) => ExitCode::SUCCESS,
        Ok(Ending::Panicked) => code(EX_SOFTWARE),
        Err(e) => {
            log::error!("{transport} worker: pipe to the queue manager failed: {e}");
            code(EX_SOFTWARE)
        }
    }
}

/// `(transport, -c FILE)` from the arguments.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<(String, Option<PathBuf>), String> {
    let mut transport = None;
    let mut config = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "-c" => config = Some(PathBuf::from(args.next().ok_or("-c needs a file")?)),
            "local" | "remote" if transport.is_none() => transport = Some(a),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let transport = transport.ok_or("missing transport (local or remote)")?;
    Ok((transport, config))
}

fn code(c: i32) -> ExitCode {
    ExitCode::from(u8::try_from(c).unwrap_or(1))
}
