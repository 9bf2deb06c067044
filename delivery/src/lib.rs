//! `sloop-delivery`: the delivery agents behind `sloop-deliver local` and
//! `sloop-deliver remote` (docs/architecture.md §1, §4).
//!
//! A worker is started by `sloop-qmgr`, reads job lines on stdin and answers with
//! result lines on stdout ([`worker`]). The [`local`] agent writes Maildirs and mbox
//! files, expands aliases, runs pipe commands and forwards; the [`remote`] agent
//! speaks SMTP to the next hop. Both open the queue file through [`message`] and
//! report through [`result`]. Logs go to stderr, one line per event, queue ID first;
//! the `status=` line of each attempt is written by `sloop-qmgr` from our result lines.
//! The program's manual is docs/sloop-deliver.8.md.

pub mod headers;
pub mod local;
pub mod message;
pub mod remote;
pub mod result;
pub mod worker;
