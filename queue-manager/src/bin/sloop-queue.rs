//! `sloop-queue`: commits the message on fd 0 with the envelope on fd 1 into the spool
//! (qmail-queue(8) contract; see docs/sloop-queue.8.md and `cli::inject`).

fn main() {
    sloop_common::secure_fs::restrict_umask();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = sloop_queue_manager::cli::inject::run(&args).map(|_id| ());
    std::process::exit(sloop_queue_manager::cli::report("sloop-queue", result));
}
