//! One session on one connection: the loop between the socket (`conn.rs`) and the
//! state machine (`session/`), with the per-phase deadlines and the panic boundary.
//!
//! Replies are collected and flushed whenever the session needs input, runs the queue
//! program or closes, so pipelined commands are answered in batches (RFC 2920) and
//! unpipelined ones one by one. Deadlines: `connect_timeout` for the connect phase,
//! `idle_timeout` while waiting for a command, `data_timeout` while waiting for message
//! octets, `command_timeout` for handling and writing, `queue_timeout` for the queue
//! program, and `session_timeout` overall; the watchdog is armed with each. Filter
//! hooks (`hooks.rs`) run under the phase deadline of their stage: the rest of
//! `connect_timeout` at connect (less a margin for the reply), `command_timeout` at
//! HELO, MAIL, RCPT and DATA, `data_timeout` at the end of the message. A panic
//! anywhere in the session is caught here: the client gets `421 4.3.0` and the worker
//! exits after this session (docs/invariants.md G3, G4).

use crate::conn::{Conn, ReadOutcome};
use crate::session::{Phase, Policy, Session, Step};
use crate::watchdog::Watchdog;
use sloop_common::config::hooks::HookListener;
use sloop_common::config::ListenRole;
use std::any::Any;
use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

/// How a session ended, as far as the worker cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    Normal,
    /// A panic was caught; the worker must exit after this session.
    Panicked,
}

/// Serves one session on `conn` from a client at `ip` (the `smtpd.listen` role).
pub fn serve(policy: &Policy, conn: &mut Conn, ip: IpAddr, watchdog: &Watchdog) -> SessionEnd {
    serve_as(policy, conn, ip, watchdog, ListenRole::Smtp)
}

/// Serves one session for a listener of `role` (on `submissions.listen` the TLS
/// handshake comes first).
pub fn serve_as(
    policy: &Policy,
    conn: &mut Conn,
    ip: IpAddr,
    watchdog: &Watchdog,
    role: ListenRole,
) -> SessionEnd {
    let host = policy.cfg.server.hostname.clone();
    let timeout_line = format!("421 4.4.2 {host} Error: timeout exceeded\r\n").into_bytes();
    watchdog.attach(conn.watchdog_fd(), timeout_line);
    let result = catch_unwind(AssertUnwindSafe(|| run(policy, conn, ip, watchdog, role)));
    let end = match result {
        Ok(()) => SessionEnd::Normal,
        Err(payload) => {
            log::error!(
                "panic in session with [{ip}]: {}; worker exits after this session",
                panic_text(&payload)
            );
            let line = format!("421 4.3.0 {host} Error: internal error\r\n");
            watchdog.arm(
                "panic reply",
                Instant::now() + policy.cfg.smtpd.command_timeout,
            );
            let _ = conn.write_all(line.as_bytes());
            log::info!("disconnect from unknown[{ip}] (after internal error)");
            SessionEnd::Panicked
        }
    };
    watchdog.detach();
    end
}

fn run(policy: &Policy, conn: &mut Conn, ip: IpAddr, watchdog: &Watchdog, role: ListenRole) {
    let s = &policy.cfg.smtpd;
    let started = Instant::now();
    let session_deadline = started + s.session_timeout;
    let implicit = if role == ListenRole::Submissions {
        let who = format!("unknown[{}]", crate::session::policy::canonical(ip));
        match crate::serve_tls::start(policy, conn, watchdog, &who) {
            Some(info) => Some(info),
            None => {
                log::info!("lost connection after CONNECT from {who}");
                return;
            }
        }
    } else {
        None
    };
    watchdog.arm("connect", started + s.connect_timeout);
    let (client, opening) = crate::connect::check(policy, ip, conn);
    log::info!("connect from {}", client.display());
    let listener = HookListener::of_role(role);
    let stages = crate::hooks::stages(policy, listener);
    let mut hooks = crate::hooks::SessionRun::new(policy, listener, stages, started);
    let mut session = Session::start(policy, client, opening)
        .with_listener(role, policy.tls.is_some(), implicit)
        .with_hooks(stages, listener);
    let mut out: Vec<u8> = Vec::new();
    // The read buffer is kept for the worker's next session (a panic just loses it).
    let mut buf = READ_BUF.take();
    buf.resize(READ_BUF_LEN, 0);
    loop {
        match session.step() {
            Step::Reply(r) => out.extend_from_slice(&r.to_wire()),
            Step::Queue(job) => {
                if !flush(conn, &mut out, policy, watchdog) {
                    session.eof();
                    continue;
                }
                watchdog.arm("queue", Instant::now() + s.queue_timeout);
                let id = job.id.clone();
                let outcome = crate::queue_client::run(&policy.cfg, &policy.spool, job);
                session.queued(&id, outcome);
            }
            Step::Close => {
                // The session is over for the client: it no longer counts against
                // smtpd.max_per_client, even before the last reply is written.
                conn.release_slot();
                flush_last(conn, &mut out, policy, watchdog);
                break;
            }
            Step::StartTls => {
                if !flush(conn, &mut out, policy, watchdog) {
                    session.eof();
                    continue;
                }
                let who = session.client().display();
                match crate::serve_tls::start(policy, conn, watchdog, &who) {
                    Some(info) => session.tls_started(info),
                    None => session.tls_failed(),
                }
            }
            Step::Authenticate(creds) => {
                if !flush(conn, &mut out, policy, watchdog) {
                    session.eof();
                    continue;
                }
                let outcome =
                    crate::serve_tls::authenticate(policy, session.client(), watchdog, &creds);
                session.authenticated(creds.mechanism, &creds.username, outcome);
            }
            Step::Hook(call) => {
                let (decision, job) = hooks.run(call, watchdog);
                if conn.peer_gone() && !session.has_input() {
                    conn.release_slot();
                    session.lost_during_hooks();
                    continue;
                }
                session.hooked(decision, job);
            }
            Step::NeedInput => {
                if !flush(conn, &mut out, policy, watchdog) {
                    session.eof();
                    continue;
                }
                read_input(
                    &mut session,
                    conn,
                    &mut buf,
                    (ip, session_deadline),
                    policy,
                    watchdog,
                );
            }
        }
    }
    hooks.finish(watchdog);
    conn.close_tls();
    log::info!("{}", session.disconnect_line());
    READ_BUF.set(buf);
}

/// Octets read from the client per `read(2)`.
const READ_BUF_LEN: usize = 64 * 1024;

thread_local! {
    static READ_BUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Reads what the client sends next into the session, within the phase's deadline.
/// While waiting for a command the budget follows overload (overload.rs), also when
/// it begins during the wait.
fn read_input(
    session: &mut Session<'_>,
    conn: &mut Conn,
    buf: &mut [u8],
    (ip, session_deadline): (IpAddr, Instant),
    policy: &Policy,
    watchdog: &Watchdog,
) {
    let s = &policy.cfg.smtpd;
    let wait_start = Instant::now();
    loop {
        let budget = match session.phase() {
            Phase::Command => crate::overload::idle_budget(s, ip),
            Phase::Data => s.data_timeout,
        };
        let deadline = (wait_start + budget).min(session_deadline);
        watchdog.arm("read", deadline);
        match conn.read(buf, deadline) {
            Ok(ReadOutcome::Data(n)) => {
                watchdog.arm("command", Instant::now() + s.command_timeout);
                session.input(&buf[..n]);
            }
            Ok(ReadOutcome::Interrupted) => continue,
            Ok(ReadOutcome::Timeout)
                if budget < s.idle_timeout && session.phase() == Phase::Command =>
            {
                session.overload_timeout();
            }
            Ok(ReadOutcome::Timeout) => session.timeout(),
            Ok(ReadOutcome::Eof) | Err(_) => {
                conn.release_slot();
                session.eof();
            }
        }
        return;
    }
}

/// Writes pending replies; false when the client is gone.
fn flush(conn: &mut Conn, out: &mut Vec<u8>, policy: &Policy, watchdog: &Watchdog) -> bool {
    if out.is_empty() {
        return true;
    }
    let deadline = write_deadline(policy, watchdog);
    let ok = conn.write_all_before(out, deadline).is_ok();
    out.clear();
    ok
}

/// Writes the session's last replies; through TLS the close_notify alert goes with
/// them.
fn flush_last(conn: &mut Conn, out: &mut Vec<u8>, policy: &Policy, watchdog: &Watchdog) {
    let deadline = write_deadline(policy, watchdog);
    let _ = conn.write_last_before(out, deadline);
    out.clear();
}

/// Arms the watchdog for a write of replies and returns the write's deadline.
fn write_deadline(policy: &Policy, watchdog: &Watchdog) -> Instant {
    let s = &policy.cfg.smtpd;
    // A client that does not read its replies holds a worker like a silent one. One
    // deadline for the whole write: the socket layer gives up at it, before the
    // watchdog (armed with the same deadline, plus its grace) would end the worker.
    let budget = if crate::overload::active() {
        s.command_timeout.min(s.overload_idle_timeout)
    } else {
        s.command_timeout
    };
    let deadline = Instant::now() + budget;
    watchdog.arm("write", deadline);
    deadline
}

fn panic_text(payload: &Box<dyn Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}
