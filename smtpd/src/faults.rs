//! Test-only fault injection (cargo feature `fault-injection`, off by default and in
//! release builds; `scripts/test` enables it for the end-to-end tests).
//!
//! `SLOOP_FAULT=<fault>[@<flag file>]` makes the connect check misbehave:
//! `connect-panic` panics, `connect-hang` blocks forever, `connect-delay` sleeps
//! 500 ms (so a test client can talk before the greeting). With `@<flag file>` the
//! fault fires only for the one worker that manages to delete that file, so a test can
//! break exactly one connection. Without the feature, [`connect_check`] does nothing.

/// Runs the injected connect fault, if any.
#[cfg(feature = "fault-injection")]
pub fn connect_check() {
    let Ok(spec) = std::env::var("SLOOP_FAULT") else {
        return;
    };
    let (fault, flag) = match spec.split_once('@') {
        Some((f, path)) => (f.to_string(), Some(path.to_string())),
        None => (spec, None),
    };
    if let Some(path) = flag {
        if std::fs::remove_file(path).is_err() {
            return;
        }
    }
    match fault.as_str() {
        #[allow(clippy::panic)]
        "connect-panic" => panic!("injected fault: connect-panic"),
        "connect-hang" => loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        },
        "connect-delay" => std::thread::sleep(std::time::Duration::from_millis(500)),
        _ => {}
    }
}

/// Fault injection is compiled out.
#[cfg(not(feature = "fault-injection"))]
pub fn connect_check() {}
