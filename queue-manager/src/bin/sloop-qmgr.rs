//! `sloop-qmgr [-c FILE]`: the queue manager, started and restarted by `sloopd`
//! (see `sloop_queue_manager::qmgr`). Exit 0 after SIGTERM, 78 on an invalid config,
//! 75 when the spool or the event loop cannot be used.

use clap::Parser;
use std::path::PathBuf;

/// The Sloop queue manager: schedules deliveries, retries and bounces.
#[derive(Parser, Debug)]
#[command(name = "sloop-qmgr", version)]
struct Args {
    /// Config file (default: $SLOOP_CONFIG, then /etc/sloop/sloop.toml).
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
}

fn main() {
    sloop_common::secure_fs::restrict_umask();
    let args = Args::parse();
    std::process::exit(sloop_queue_manager::qmgr::run(args.config.as_deref()));
}
