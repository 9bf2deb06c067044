//! `sloopd`, Sloop's supervisor (docs/architecture.md §1, in the Postfix `master` model).
//!
//! It validates the config (refusing to start on an invalid one, docs/invariants.md G6),
//! binds every listener before any child exists, starts the smtpd prefork pool, the
//! queue manager and the pickup, keeps `smtpd.min_idle` workers idle from their status
//! records, restarts
//! crashed children with exponential backoff, reloads on SIGHUP and stops within
//! `supervisor.stop_timeout` on SIGTERM. It never parses client input and never exits
//! because a child misbehaves (docs/invariants.md G4).
//!
//! - [`acceptor`]: the busy acceptor (421 4.3.2 instead of a silent backlog).
//! - [`overload`]: when the pool is overloaded, who is over their share (pure).
//! - [`backoff`]: restart delays (pure).
//! - [`pool`]: idle/busy accounting of smtpd workers (pure).
//! - [`listeners`]: binding and passing the listening sockets.
//! - [`status_pipe`]: the workers' status records.
//! - [`children`]: spawning, signalling and reaping.
//! - [`setup`]: directories, credentials, pid file.
//! - [`tmp_sweep`]: removing the `tmp/` queue files of workers that died.
//! - [`supervisor`]: the state and the action for each event.
//! - [`event_loop`]: the mio loop and signals.

pub mod acceptor;
pub mod backoff;
pub mod children;
pub mod event_loop;
pub mod listeners;
pub mod overload;
pub mod pool;
pub mod setup;
pub mod status_pipe;
pub mod supervisor;
pub mod tls_keys;
pub mod tmp_sweep;
