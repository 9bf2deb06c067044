//! `sloop`: the operator CLI (queue list/show/delete/hold/release/flush/stats, config
//! check/sample/docs, status). See docs/sloop.8.md and `cli::operator`.

use sloop_queue_manager::cli::{operator, report};

fn main() {
    sloop_common::secure_fs::restrict_umask();
    let cli = match operator::parse(std::env::args()) {
        Ok(cli) => cli,
        Err(code) => std::process::exit(code),
    };
    let mut out = std::io::stdout().lock();
    let result = operator::run(&cli, &mut out);
    std::process::exit(report("sloop", result));
}
