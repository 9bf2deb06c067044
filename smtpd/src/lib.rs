//! `sloop-smtpd`: Sloop's SMTP receiver.
//!
//! A prefork worker started by `sloopd`: it inherits the listening sockets and a status
//! pipe (`sloop_common::pool_proto`), serves one SMTP session at a time and exits after
//! `smtpd.max_use` sessions. The protocol logic is a state machine without I/O
//! ([`session`]) fed by a thin socket layer ([`conn`]) with per-phase deadlines and a
//! watchdog thread ([`watchdog`]); messages are committed into the spool in-process, or
//! handed to a configured qmail-queue compatible program ([`queue_client`]). Modules:
//!
//! - [`reply`]: replies that cannot be malformed (docs/invariants.md G7);
//! - [`parser`], [`address`], [`data`], [`bdat`]: command lines, paths, the DATA and
//!   BDAT receivers;
//! - [`session`]: the state machine, its transaction and recipient policy;
//! - [`connect`]: the connect phase (access rules, early talkers, fault injection);
//! - [`rdns`]: forward-confirmed reverse DNS within its own timeout;
//! - [`client_limit`]: per-client concurrency across worker processes;
//! - [`overload`]: the short idle budget while the pool is overloaded;
//! - [`spool_room`]: `452 4.3.1` at MAIL FROM when the spool is short of space;
//! - [`serve`]: one session on one connection, deadlines and the panic boundary;
//! - [`auth`]: AUTH: SASL decoding, the password check, failure counts, sender rules;
//! - [`proxy`]: the PROXY protocol header on `smtpd.proxy_listen`;
//! - [`serve_tls`]: the TLS handshake and the password check as steps of a session;
//! - [`queue_client`]: queueing a message (in-process commit or the queue program);
//! - [`faults`]: test-only fault injection (cargo feature `fault-injection`);
//! - [`fds`]: adopting inherited descriptors (the only `unsafe`);
//! - [`tls`]: the TLS server context and TLS over the client socket;
//! - [`worker`]: the accept loop and the status pipe.

pub mod address;
pub mod auth;
pub mod bdat;
pub mod client_limit;
pub mod conn;
pub mod connect;
pub mod data;
pub mod faults;
pub mod fds;
pub mod hooks;
pub mod overload;
pub mod parser;
pub mod proxy;
pub mod queue_client;
pub mod rdns;
pub mod reply;
pub mod serve;
pub mod serve_tls;
pub mod session;
pub mod spool_room;
pub mod tls;
pub mod watchdog;
pub mod worker;
