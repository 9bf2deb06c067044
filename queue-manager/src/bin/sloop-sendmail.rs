//! `sloop-sendmail` (also installed as `sendmail` and `mailq`): the sendmail(8)
//! command-line interface. See docs/sloop-sendmail.1.md and `cli::sendmail`.

fn main() {
    sloop_common::secure_fs::restrict_umask();
    let argv: Vec<String> = std::env::args().collect();
    let result = sloop_queue_manager::cli::sendmail::run(&argv);
    std::process::exit(sloop_queue_manager::cli::report("sloop-sendmail", result));
}
