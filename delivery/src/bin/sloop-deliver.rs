//! `sloop-deliver local|remote [-c FILE]`: a long-lived delivery worker started by
//! `sloop-qmgr` (docs/architecture.md §4; the protocol is common/src/delivery_proto.rs).
//! `sloop-deliver spawner [-c FILE]`: the root local spawner `sloopd` runs when
//! `local.system_users` is on (delivery/src/local/spawner.rs); a local worker that is
//! not root hands its pipes to it and waits for the root worker's exit status.
//!
//! Exit codes: 0 at EOF on stdin; 64 for a bad command line; 78 when the config is
//! missing or invalid (SEED.md G6); 70 after an agent panicked (the job was answered
//! with `defer` first) or when stdin/stdout fail; 71 when the spawner cannot listen;
//! 77 for the spawner not started as root. stdout carries protocol lines only.

use sloop_common::exitcode::{EX_CONFIG, EX_SOFTWARE, EX_USAGE};
use sloop_common::Config;
use sloop_delivery::local::spawner;
use sloop_delivery::worker::{serve, Agent, Ending};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: sloop-deliver local|remote|spawner [-c CONFIG]";

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
    let syslog_name = match transport.as_str() {
        "local" => "local",
        "spawner" => "spawn",
        _ => "smtp",
    };
    sloop_common::logging::init_with("sloop-deliver", syslog_name, &cfg.log);
    let root = nix::unistd::geteuid().is_root();
    if transport == "spawner" {
        if !root {
            log::error!("the local spawner must be started as root (by sloopd)");
            return code(77);
        }
        return match spawner::serve(&cfg, &cfg.program("sloop-deliver")) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                log::error!("local spawner: {e}");
                code(71)
            }
        };
    }
    if transport == "local" && cfg.local.system_users && !root {
        if let Some(status) = spawner::hand_off() {
            return ExitCode::from(status);
        }
    }
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
            "local" | "remote" | "spawner" if transport.is_none() => transport = Some(a),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let transport = transport.ok_or("missing transport (local or remote)")?;
    Ok((transport, config))
}

fn code(c: i32) -> ExitCode {
    ExitCode::from(u8::try_from(c).unwrap_or(1))
}
