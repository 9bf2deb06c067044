//! `sloop-smtpd`: Sloop's SMTP receiver (issue 3).
//!
//! A prefork worker started by `sloopd`: it inherits the listening sockets and a status
//! pipe (`sloop_common::pool_proto`), serves one SMTP session at a time and exits after
//! `smtpd.max_use` sessions. The protocol logic is a state machine without I/O
//! ([`session`]) fed by a thin socket layer ([`conn`]) with per-phase deadlines and a
//! watchdog thread ([`watchdog`]); messages go to the qmail-queue compatible queue
//! program ([`queue_client`]). Modules:
//!
//! - [`reply`]: replies that cannot be malformed (SEED.md G7);
//! - [`parser`], [`address`], [`data`]: command lines, paths, the DATA receiver;
//! - [`session`]: the state machine, its transaction and recipient policy;
//! - [`connect`]: the connect phase (access rules, reverse DNS, fault injection);
//! - [`client_limit`]: per-client concurrency across worker processes;
//! - [`worker`]: the accept loop and the status pipe.

pub mod address;
pub mod data;
pub mod parser;
pub mod reply;
pub mod session;
