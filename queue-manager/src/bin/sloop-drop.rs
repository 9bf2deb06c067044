//! `sloop-drop`: local submission into the spool's maildrop, installed set-group-ID to
//! the submission group (docs/sloop-drop.8.md and `cli::drop`).

fn main() {
    sloop_common::secure_fs::restrict_umask();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = sloop_queue_manager::cli::drop::run(&args);
    std::process::exit(sloop_queue_manager::cli::report("sloop-drop", result));
}
