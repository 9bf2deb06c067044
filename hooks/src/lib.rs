//! Sloop's filter hooks, shared by `sloop-smtpd` (the listeners) and `sloop-pickup`
//! (mail injected with `sendmail`, the `local` listener of `[[milter]]`).
//!
//! - `policy`: the Postfix policy delegation client (`check_policy_service`).
//! - `milter`: the milter protocol 6 client and the edits it applies.
//! - `access`: in-process access rules (`[access]`), no daemon, bounded time.
//! - `failure`: the one failure policy (`on_error`, legal reply codes per stage,
//!   sanitized reply text).
//! - `engine`: runs the hooks of a stage in order under the phase deadline and turns
//!   their answers into one decision for the session.
//!
//! docs/filters.md is the operator's page.

pub mod access;
pub mod engine;
pub mod failure;
pub mod milter;
pub mod policy;
pub mod resolve;
