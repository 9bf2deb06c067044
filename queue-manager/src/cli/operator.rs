//! `sloop`, the operator CLI (docs/sloop.8.md): clap definitions and dispatch to the
//! queue views (`queue_view`), queue changes (`queue_ops`), and the config and status
//! commands here.
//!
//! Exit codes are sysexits(3): 64 usage, 66 no such message / no spool, 74 I/O error,
//! 78 configuration error; `sloop status` exits 3 when sloopd is not running (the LSB
//! init-script convention).

use super::passwd::PasswdAction;
use super::queue_ops::{self, Action, Targets};
use super::queue_view::{self, write_out};
use super::{load_config, ToolError};
use clap::{Args, Parser, Subcommand};
use sloop_common::config::{self, Config};
use sloop_common::exitcode;
use sloop_common::spool::Spool;
use std::io::Write;
use std::path::{Path, PathBuf};

/// `sloop status` exit code when sloopd is not running.
pub const STATUS_NOT_RUNNING: i32 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "sloop",
    version,
    about = "Sloop operator tool: queue, config, status, passwd"
)]
pub struct Cli {
    /// Configuration file (default: $SLOOP_CONFIG, else /etc/sloop/sloop.toml).
    #[arg(short = 'c', long = "config", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect and change the mail queue.
    #[command(subcommand)]
    Queue(QueueCmd),
    /// Check, show and document the configuration.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Is sloopd running, and what is in the queue.
    Status,
    /// Manage the AUTH users of auth.password_file.
    #[command(subcommand)]
    Passwd(PasswdCmd),
}

#[derive(Debug, Subcommand)]
pub enum PasswdCmd {
    /// Add a user or change its password (read from the first line of standard input).
    Add { user: String },
    /// Remove a user.
    Delete { user: String },
    /// List the users and their hash schemes.
    List,
}

#[derive(Debug, Subcommand)]
pub enum QueueCmd {
    /// List queued messages (ID, size, arrival, state, sender, recipients, last error).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one message: envelope, headers and per-recipient status.
    Show {
        id: String,
        /// Print the whole message instead of its headers.
        #[arg(long)]
        body: bool,
    },
    /// Delete messages for good.
    Delete(TargetArgs),
    /// Put messages on hold (no delivery until released).
    Hold(TargetArgs),
    /// Release held messages for delivery.
    Release(TargetArgs),
    /// Retry every deferred message now.
    Flush,
    /// Counts per state and the oldest message's age.
    Stats {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Queue IDs.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub ids: Vec<String>,
    /// Every message the command applies to.
    #[arg(long)]
    pub all: bool,
}

impl TargetArgs {
    fn targets(&self) -> Targets {
        if self.all {
            Targets::All
        } else {
            Targets::Ids(self.ids.clone())
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Validate the configuration; print every error, or "config OK".
    Check {
        /// Print the effective configuration (every key, defaults marked).
        #[arg(long)]
        show: bool,
    },
    /// Print the packaged sample configuration (etc/sloop.toml).
    Sample,
    /// Print the configuration reference (docs/configuration.md).
    Docs,
    /// Print the sloop.toml(5) man page (roff), as the package installs it.
    Man,
}

/// Parses argv the clap way but with sysexits: usage errors exit 64, help exits 0.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Cli, i32> {
    Cli::try_parse_from(args).map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            exitcode::EX_USAGE
        } else {
            exitcode::EX_OK
        }
    })
}

/// Runs a parsed command, writing its output to `out`.
pub fn run(cli: &Cli, out: &mut impl Write) -> Result<(), ToolError> {
    let cfg_path = cli.config.as_deref();
    match &cli.command {
        Command::Config(cmd) => run_config(cmd, cfg_path, out),
        Command::Queue(cmd) => {
            let cfg = load_config(cfg_path, exitcode::EX_CONFIG)?;
            run_queue(cmd, &Spool::new(&cfg.server.spool_dir), out)
        }
        Command::Status => {
            let cfg = load_config(cfg_path, exitcode::EX_CONFIG)?;
            status(&cfg, out)
        }
        Command::Passwd(cmd) => {
            let path = config::resolve_path(cfg_path);
            let cfg = Config::load_unchecked(&path)
                .map_err(|e| ToolError::new(exitcode::EX_CONFIG, e.to_string()))?;
            let action = match cmd {
                PasswdCmd::Add { user } => PasswdAction::Add(user.clone()),
                PasswdCmd::Delete { user } => PasswdAction::Delete(user.clone()),
                PasswdCmd::List => PasswdAction::List,
            };
            super::passwd::run(&cfg, &action, &mut std::io::stdin().lock(), out)
        }
    }
}

/// Runs one `sloop queue` command on `spool` (shared with sloop-sendmail's -bp and -q).
pub fn run_queue(cmd: &QueueCmd, spool: &Spool, out: &mut impl Write) -> Result<(), ToolError> {
    match cmd {
        QueueCmd::List { json } => queue_view::list(spool, *json, out),
        QueueCmd::Show { id, body } => queue_view::show(spool, id, *body, out),
        QueueCmd::Delete(t) => queue_ops::apply(spool, Action::Delete, &t.targets(), out),
        QueueCmd::Hold(t) => queue_ops::apply(spool, Action::Hold, &t.targets(), out),
        QueueCmd::Release(t) => queue_ops::apply(spool, Action::Release, &t.targets(), out),
        QueueCmd::Flush => queue_ops::flush(spool, out),
        QueueCmd::Stats { json } => queue_view::print_stats(spool, *json, out),
    }
}

fn run_config(cmd: &ConfigCmd, path: Option<&Path>, out: &mut impl Write) -> Result<(), ToolError> {
    match cmd {
        ConfigCmd::Sample => write_out(out, &config::render_sample()),
        ConfigCmd::Docs => write_out(out, &config::render_docs()),
        ConfigCmd::Man => write_out(out, &config::render_man(env!("CARGO_PKG_VERSION"))),
        ConfigCmd::Check { show } => {
            let cfg = load_config(path, exitcode::EX_CONFIG)?;
            cfg.check_tables()
                .map_err(|e| ToolError::new(exitcode::EX_CONFIG, e.to_string()))?;
            sloop_common::tls_material::load_configured(&cfg)
                .map_err(|e| ToolError::new(exitcode::EX_CONFIG, format!("TLS: {e}")))?;
            if *show {
                write_out(out, &cfg.render_effective())?;
            }
            write_out(out, &format!("config OK: {}\n", cfg.file.display()))
        }
    }
}

/// `sloop status`: sloopd's pid file and liveness, then the queue counts.
fn status(cfg: &Config, out: &mut impl Write) -> Result<(), ToolError> {
    let pid_file = cfg.server.run_dir.join("sloopd.pid");
    let running = read_pid(&pid_file).filter(|pid| alive(*pid));
    let line = match running {
        Some(pid) => format!("sloopd: running (pid {pid})\n"),
        None => format!("sloopd: not running (pid file {})\n", pid_file.display()),
    };
    write_out(out, &line)?;
    if running.is_some() {
        write_out(out, &pool_lines(&cfg.server.run_dir))?;
    }
    write_out(out, &space_line(cfg))?;
    let spool = Spool::new(&cfg.server.spool_dir);
    match queue_view::print_stats(&spool, false, out) {
        Ok(()) => {}
        Err(e) => write_out(out, &format!("queue: {}\n", e.message))?,
    }
    match running {
        Some(_) => Ok(()),
        None => Err(ToolError::new(STATUS_NOT_RUNNING, "sloopd is not running")),
    }
}

/// The smtpd pool and overload, from the status file sloopd keeps (pool_state.rs).
fn pool_lines(run_dir: &Path) -> String {
    use sloop_common::pool_state::{unix_now, PoolStatus, STATUS_FILE};
    let Ok(text) = std::fs::read_to_string(run_dir.join(STATUS_FILE)) else {
        return "smtpd pool: unknown (no status file yet)\n".to_string();
    };
    let p = PoolStatus::parse(&text);
    let mut s = format!(
        "smtpd pool: {} busy, {} idle, {} starting, limit {} (smtpd.max_processes); \
         {} connection(s) waiting for a worker; {} refused busy (421 4.3.2) since start\n",
        p.busy, p.idle, p.starting, p.limit, p.waiting, p.refused_busy
    );
    match p.overload_since {
        Some(t) => s.push_str(&format!(
            "overload: yes, since {} ({}s)\n",
            sloop_common::logging::rfc5322_date(t),
            unix_now().saturating_sub(t)
        )),
        None => s.push_str("overload: no\n"),
    }
    s
}

/// The spool's free space against `queue.min_free`.
fn space_line(cfg: &Config) -> String {
    use sloop_common::spool::space::{free_bytes, human, room_for};
    let dir = &cfg.server.spool_dir;
    let min = cfg.queue.min_free;
    match free_bytes(dir) {
        Ok(free) => format!(
            "spool: {} free on {} (queue.min_free {}){}\n",
            human(free),
            dir.display(),
            human(min),
            if room_for(free, min, 0) {
                ""
            } else {
                "; BELOW queue.min_free: new mail gets 452 4.3.1"
            }
        ),
        Err(e) => format!("spool: free space unknown ({}: {e})\n", dir.display()),
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .filter(|pid| *pid > 0)
}

fn alive(pid: i32) -> bool {
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn config_flag_is_global_and_targets_need_ids_or_all() {
        let cli = parse(args("sloop config check -c /x.toml --show")).unwrap();
        assert_eq!(cli.config.as_deref(), Some(Path::new("/x.toml")));
        let cli = parse(args("sloop -c /y.toml queue delete --all")).unwrap();
        assert!(matches!(cli.command, Command::Queue(QueueCmd::Delete(ref t)) if t.all));
        assert_eq!(parse(args("sloop queue hold")).err(), Some(64));
        assert_eq!(parse(args("sloop queue hold --all ABC")).err(), Some(64));
        assert_eq!(parse(args("sloop bogus")).err(), Some(64));
    }
}
