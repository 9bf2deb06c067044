//! The pipe protocol between `sloop-qmgr` and its long-lived `sloop-deliver` workers
//! (docs/architecture.md §4).
//!
//! The queue manager writes one job per line on the worker's stdin; the worker answers
//! with one result line per recipient on its stdout, then a `done` line. Fields are
//! separated by TAB; in every field `%`, TAB, CR, LF and NUL are written `%XX`, so a field
//! can hold any address. A worker reads its config from `SLOOP_CONFIG` / `-c` like every
//! Sloop program.
//!
//! ```text
//! job  <job-id> <queue-id> <queue-file-path> <transport> <nexthop> <sender> <indices> <rcpt>...
//! rcpt <job-id> <index>    <ok|defer|fail>   <dsn>       <relay>   <text>
//! done <job-id>
//! ```
//!
//! `transport` is `local` or `remote`; `nexthop` is the destination domain (remote) or
//! empty (local). `indices` lists, comma-separated, each job recipient's position in the
//! message's envelope (the worker records its successes under these in the message's
//! status log, spool/status.rs). `index` is the recipient's position in the job (0-based); `dsn` is an
//! enhanced status code such as `2.0.0`; `relay` names where it went
//! (`local`, `mx.example.com[192.0.2.1]:25`); `text` is the SMTP reply or the reason.
//! EOF, a malformed line, or a missing result defers the job's recipients and the worker
//! is replaced.

/// Set by `sloopd` in the queue manager's environment (and so its workers') when it
/// runs the root local spawner: the spawner's socket. A local worker that is not root
/// hands its pipes to it (delivery/src/local/spawner.rs).
pub const ENV_LOCAL_SPAWNER: &str = "SLOOP_LOCAL_SPAWNER";

use crate::spool::queue_id::QueueId;
use crate::spool::status::Outcome;

/// One delivery job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub job_id: u64,
    /// The message's queue ID (a job line with anything else does not parse).
    pub queue_id: QueueId,
    pub path: String,
    pub transport: Transport,
    pub nexthop: String,
    pub sender: String,
    /// Each recipient's index in the message's envelope, in the order of `recipients`.
    pub indices: Vec<usize>,
    pub recipients: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Local,
    Remote,
}

impl Transport {
    pub fn word(self) -> &'static str {
        match self {
            Transport::Local => "local",
            Transport::Remote => "remote",
        }
    }
}

/// One line a worker writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Rcpt {
        job_id: u64,
        index: usize,
        outcome: Outcome,
        dsn: String,
        relay: String,
        text: String,
    },
    Done {
        job_id: u64,
    },
}

/// Escapes `%`, TAB, CR, LF and NUL as `%XX`.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' | '\t' | '\r' | '\n' | '\0' => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Reverses [`escape`]; `None` on a malformed escape.
pub fn unescape(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_string());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl Job {
    /// The job as one line, newline included.
    pub fn to_line(&self) -> String {
        let mut fields = vec![
            "job".to_string(),
            self.job_id.to_string(),
            self.queue_id.to_string(),
            escape(&self.path),
            self.transport.word().to_string(),
            escape(&self.nexthop),
            escape(&self.sender),
            self.indices
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ];
        fields.extend(self.recipients.iter().map(|r| escape(r)));
        let mut line = fields.join("\t");
        line.push('\n');
        line
    }

    /// Parses a job line (without or with its newline).
    pub fn parse(line: &str) -> Option<Job> {
        let mut f = line.trim_end_matches('\n').split('\t');
        if f.next()? != "job" {
            return None;
        }
        let job_id = f.next()?.parse().ok()?;
        let queue_id = QueueId::parse(f.next()?)?;
        let path = unescape(f.next()?)?;
        let transport = match f.next()? {
            "local" => Transport::Local,
            "remote" => Transport::Remote,
            _ => return None,
        };
        let nexthop = unescape(f.next()?)?;
        let sender = unescape(f.next()?)?;
        let indices = f
            .next()?
            .split(',')
            .map(|i| i.parse().ok())
            .collect::<Option<Vec<usize>>>()?;
        let recipients = f.map(unescape).collect::<Option<Vec<_>>>()?;
        if recipients.is_empty()
            || recipients.iter().any(String::is_empty)
            || indices.len() != recipients.len()
        {
            return None;
        }
        Some(Job {
            job_id,
            queue_id,
            path,
            transport,
            nexthop,
            sender,
            indices,
            recipients,
        })
    }
}

impl Reply {
    /// The reply as one line, newline included.
    pub fn to_line(&self) -> String {
        match self {
            Reply::Rcpt {
                job_id,
                index,
                outcome,
                dsn,
                relay,
                text,
            } => {
                format!(
                    "rcpt\t{job_id}\t{index}\t{}\t{}\t{}\t{}\n",
                    outcome.word(),
                    escape(dsn),
                    escape(relay),
                    escape(text)
                )
            }
            Reply::Done { job_id } => format!("done\t{job_id}\n"),
        }
    }

    /// Parses a reply line; `None` for anything malformed (the worker is then replaced).
    pub fn parse(line: &str) -> Option<Reply> {
        let mut f = line.trim_end_matches('\n').split('\t');
        match f.next()? {
            "rcpt" => {
                let job_id = f.next()?.parse().ok()?;
                let index = f.next()?.parse().ok()?;
                let outcome = Outcome::parse(f.next()?)?;
                let dsn = unescape(f.next()?)?;
                let relay = unescape(f.next()?)?;
                let text = unescape(f.next()?)?;
                if f.next().is_some() {
                    return None;
                }
                Some(Reply::Rcpt {
                    job_id,
                    index,
                    outcome,
                    dsn,
                    relay,
                    text,
                })
            }
            "done" => {
                let job_id = f.next()?.parse().ok()?;
                f.next().is_none().then_some(Reply::Done { job_id })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn job_round_trip_with_odd_addresses() {
        let job = Job {
            job_id: 7,
            queue_id: QueueId::parse("0123456789ABCDEF012345").unwrap(),
            path: "/var/spool/sloop/active/0123456789ABCDEF012345".into(),
            transport: Transport::Remote,
            nexthop: "example.net".into(),
            sender: String::new(),
            indices: vec![3, 0],
            recipients: vec!["a@example.net".into(), "\"we\tird%\"@example.net".into()],
        };
        let line = job.to_line();
        assert_eq!(line.matches('\n').count(), 1);
        assert_eq!(Job::parse(&line), Some(job));
    }

    #[test]
    fn replies_round_trip_and_garbage_is_refused() {
        let r = Reply::Rcpt {
            job_id: 1,
            index: 2,
            outcome: Outcome::Defer,
            dsn: "4.4.1".into(),
            relay: "mx[192.0.2.1]:25".into(),
            text: "451 try\tlater".into(),
        };
        assert_eq!(Reply::parse(&r.to_line()), Some(r));
        assert_eq!(Reply::parse("done\t5\n"), Some(Reply::Done { job_id: 5 }));
        for bad in [
            "",
            "done",
            "done\tx",
            "rcpt\t1\t2\tmaybe\t\t\t",
            "hello",
            "rcpt\t1\t2\tok\t%zz\t\t",
        ] {
            assert_eq!(Reply::parse(bad), None, "{bad:?}");
        }
        // Fields: job, id, queue id, path, transport, nexthop, sender, indices, rcpts.
        let ok = "job\t1\t0123456789ABCDEF012345\t/p\tlocal\t\ts@x\t4\ta@b";
        assert_eq!(Job::parse(ok).map(|j| j.indices), Some(vec![4]));
        // Not a queue ID: never reaches a path or a log line.
        assert_eq!(
            Job::parse(&ok.replace("0123456789ABCDEF012345", "../x")),
            None
        );
        for bad in [
            "job\t1\t0123456789ABCDEF012345\t/p\tlocal\t\t\t0,1\ta@b\textra%",
            "job\t1\t0123456789ABCDEF012345\t/p\tlocal\t\t\t0\t",
            "job\t1\t0123456789ABCDEF012345\t/p\tlocal\t\t\t0,1\ta@b",
            "job\t1\t0123456789ABCDEF012345\t/p\tlocal\t\t\tx\ta@b",
            "job\t1\t0123456789ABCDEF012345\t/p\tlocal\t\t\ta@b",
        ] {
            assert_eq!(Job::parse(bad), None, "{bad:?}");
        }
    }
}
