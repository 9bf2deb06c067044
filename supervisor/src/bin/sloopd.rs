//! `sloopd [-c FILE] [--daemon] [--check]`: the supervisor's command line and start-up.
//!
//! Order matters: load and validate the config (exit 78 with every error on stderr
//! before anything is bound), install the signal handlers, create directories and bind every listener (so those
//! errors reach the terminal), detach if `--daemon`, then set up logging (so log lines
//! carry the daemon's own pid), write the pid file and run the event loop until a stop
//! finishes. Exit codes follow sysexits(3).

use clap::Parser;
use nix::unistd::{Gid, Uid};
use signal_hook_mio::v1_0::Signals;
use sloop_common::exitcode::{EX_CANTCREAT, EX_CONFIG, EX_OK, EX_OSERR, EX_UNAVAILABLE};
use sloop_common::Config;
use sloop_supervisor::acceptor::Acceptor;
use sloop_supervisor::event_loop;
use sloop_supervisor::listeners::Listeners;
use sloop_supervisor::setup::{self, PidFile};
use sloop_supervisor::status_pipe::StatusPipe;
use sloop_supervisor::supervisor::Supervisor;
use sloop_supervisor::tls_keys::TlsHandoff;
use std::path::{Path, PathBuf};

/// Sloop's supervisor: binds the SMTP listeners and runs the smtpd pool and the queue
/// manager.
#[derive(Debug, Parser)]
#[command(name = "sloopd", version)]
struct Args {
    /// Config file (default: $SLOOP_CONFIG, else /etc/sloop/sloop.toml).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Detach from the terminal (for SysV init); stderr stays where it was pointed.
    #[arg(long)]
    daemon: bool,
    /// Validate the config, print the result and exit (0 valid, 78 invalid).
    #[arg(long)]
    check: bool,
}

/// A start-up failure: the exit code and the reason.
type Failure = (i32, String);

fn main() {
    sloop_common::secure_fs::restrict_umask();
    let args = Args::parse();
    std::process::exit(run(&args));
}

fn run(args: &Args) -> i32 {
    let path = absolute(&sloop_common::config::resolve_path(args.config.as_deref()));
    let cfg = match Config::load(&path).and_then(|c| c.check_tables().map(|()| c)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sloopd: {e}");
            return EX_CONFIG;
        }
    };
    let tls = match TlsHandoff::load(&cfg, std::time::Instant::now()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("sloopd: {e}");
            return EX_CONFIG;
        }
    };
    if args.check {
        println!("sloopd: {}: configuration is valid", path.display());
        return EX_OK;
    }
    let signals = match event_loop::signals() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sloopd: fatal: cannot install signal handlers: {e}");
            return EX_OSERR;
        }
    };
    let (creds, listeners) = match prepare(&cfg, args.daemon) {
        Ok(p) => p,
        Err((code, why)) => {
            eprintln!("sloopd: fatal: {why}");
            return code;
        }
    };
    sloop_common::logging::init_with("sloopd", "master", &cfg.log);
    log::debug!("keys left at their default: {}", cfg.defaulted.join(", "));
    log::info!(
        "starting with {}: hostname {}, greeting \"{}\", listening on {:?}",
        path.display(),
        cfg.server.hostname,
        cfg.smtpd.greeting,
        listeners.addrs()
    );
    if let Some(note) = setup::user_note(&cfg, creds) {
        log::warn!("{note}");
    }
    if let Some(note) = setup::drop_group_note(&cfg, creds) {
        log::warn!("{note}");
    }
    match serve(cfg, creds, listeners, tls, signals) {
        Ok(()) => {
            log::info!("stopped");
            EX_OK
        }
        Err((code, why)) => {
            log::error!("fatal: {why}");
            code
        }
    }
}

/// Directories, credentials and listeners, then detaching: everything whose failure
/// the operator should see on the terminal.
fn prepare(cfg: &Config, daemon: bool) -> Result<(Option<(Uid, Gid)>, Listeners), Failure> {
    let creds = setup::credentials(cfg).map_err(|e| (EX_CONFIG, e.to_string()))?;
    setup::prepare_dirs(cfg, creds).map_err(|e| (EX_CANTCREAT, e.to_string()))?;
    let addrs: Vec<_> = cfg.all_listen().into_iter().map(|(a, _)| a).collect();
    let listeners = Listeners::bind_all(&addrs).map_err(|e| (EX_UNAVAILABLE, e.to_string()))?;
    if daemon {
        detach().map_err(|e| (EX_OSERR, format!("cannot detach: {}", e.desc())))?;
    }
    Ok((creds, listeners))
}

/// The pid file and the event loop.
fn serve(
    cfg: Config,
    creds: Option<(Uid, Gid)>,
    listeners: Listeners,
    tls: TlsHandoff,
    signals: Signals,
) -> Result<(), Failure> {
    let pid_file =
        PidFile::create(&cfg.server.run_dir).map_err(|e| (EX_CANTCREAT, e.to_string()))?;
    log::debug!("pid file {}", pid_file.path().display());
    let status = StatusPipe::new().map_err(|e| {
        (
            EX_OSERR,
            format!("cannot create the status pipe: {}", e.desc()),
        )
    })?;
    let fd_limit = setup::raise_fd_limit();
    let acceptor = Acceptor::new(setup::acceptor_cap(fd_limit)).map_err(|e| {
        (
            EX_OSERR,
            format!("cannot create the hand-off socket: {}", e.desc()),
        )
    })?;
    let mut sup = Supervisor::new(cfg, creds, listeners, status, acceptor, tls);
    let result = event_loop::run(&mut sup, signals);
    drop(pid_file);
    result.map_err(|e| (EX_OSERR, format!("event loop failed: {e}")))
}

/// Detaches from the terminal: fork, setsid, chdir /, stdin from /dev/null. stdout and
/// stderr are kept, so the init script decides where the log goes.
fn detach() -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    let null = std::fs::File::open("/dev/null").map_err(|_| nix::errno::Errno::ENOENT)?;
    nix::unistd::dup2(null.as_raw_fd(), 0)?;
    nix::unistd::daemon(false, true)
}

/// The config path as an absolute path, so children and reloads find the same file
/// whatever the working directory becomes.
fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}
