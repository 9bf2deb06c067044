//! `sloop-pickup [-c FILE]`: takes local submissions from the spool's maildrop into the
//! queue and answers `mailq` for local users; started and restarted by `sloopd` (see
//! `sloop_queue_manager::pickup`, docs/sloop-pickup.8.md). Exit 0 after SIGTERM or
//! SIGHUP, 78 on an invalid config, 75 when its FIFO or socket cannot be set up.

use clap::Parser;
use std::path::PathBuf;

/// The Sloop pickup: commits maildrop files into the queue.
#[derive(Parser, Debug)]
#[command(name = "sloop-pickup", version)]
struct Args {
    /// Config file (default: $SLOOP_CONFIG, then /etc/sloop/sloop.toml).
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
}

fn main() {
    sloop_common::secure_fs::restrict_umask();
    let args = Args::parse();
    std::process::exit(sloop_queue_manager::pickup::run(args.config.as_deref()));
}
