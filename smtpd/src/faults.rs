//! Test-only fault injection (cargo feature `fault-injection`, off by default and in
//! release builds; `scripts/test` enables it for the end-to-end tests).
//!
//! `SLOOP_FAULT=<fault>[@<flag file>]` makes the connect check misbehave:
//! `connect-panic` panics, `connect-hang` blocks forever, `connect-delay` sleeps
//! 500 ms (so a test client can talk before the greeting); `hook-hang` blocks the
//! filter hooks forever (as a filter client stuck past every timer of its own would),
//! for the watchdog's `421 4.4.2`. With `@<flag file>` the fault fires only for the
//! one worker that manages to delete that file, so a test can break exactly one
//! connection. Without the feature, [`connect_check`] and [`hook_check`] do nothing.

/// Runs the injected connect fault, if any.
#[cfg(feature = "fault-injection")]
pub fn connect_check() {
    injected(&["connect-panic", "connect-hang", "connect-delay"]);
}

/// Runs the injected hook fault, if any.
#[cfg(feature = "fault-injection")]
pub fn hook_check() {
    injected(&["hook-hang"]);
}

/// Runs the fault `SLOOP_FAULT` names when it is one of `here`.
#[cfg(feature = "fault-injection")]
fn injected(here: &[&str]) {
    let Ok(spec) = std::env::var("SLOOP_FAULT") else {
        return;
    };
    let (fault, flag) = match spec.split_once('@') {
        Some((f, path)) => (f.to_string(), Some(path.to_string())),
        None => (spec, None),
    };
    if !here.contains(&fault.as_str()) {
        return;
    }
    if let Some(path) = flag {
        if std::fs::remove_file(path).is_err() {
            return;
        }
    }
    match fault.as_str() {
        #[allow(clippy::panic)]
        "connect-panic" => panic!("injected fault: connect-panic"),
        "connect-hang" | "hook-hang" => loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        },
        "connect-delay" => std::thread::sleep(std::time::Duration::from_millis(500)),
        _ => {}
    }
}

/// Fault injection is compiled out.
#[cfg(not(feature = "fault-injection"))]
pub fn connect_check() {}

/// Fault injection is compiled out.
#[cfg(not(feature = "fault-injection"))]
pub fn hook_check() {}
