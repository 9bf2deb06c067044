//! Per-recipient results of a message: `status/<id>`, an append-only log written by the
//! queue manager and the delivery workers (docs/architecture.md §3, invariant 2).
//!
//! One line per event: `<unix secs> <recipient index> <kind> <dsn> <text>`, where kind is
//! `ok`, `fail` or `defer`, or `<unix secs> - bounced <bounce id>` once the bounce for the
//! failed recipients has itself been committed. Each append is fsync'd before the
//! queue manager acts on it. The **first** `ok`/`fail` of a recipient is final: later
//! lines about it are ignored (a recipient once delivered stays delivered); a torn last
//! line (crash mid-write) is ignored, so the worst case is a retried delivery.
//!
//! Two writers append: the queue manager (every result, group-committed once per loop
//! turn), and a delivery worker whose queue manager was killed, which appends an `ok`
//! line for each recipient it delivered but could not report ([`record_delivered`]:
//! one `write(2)` per job, no fsync), so the next queue manager does not deliver it
//! again. The worker's line is not fsync'd: losing it in a power failure costs a
//! duplicate, never a loss. Each line is written by one `write(2)` on an `O_APPEND`
//! descriptor, so lines of two writers never interleave.

use super::{ctx, Spool, SpoolError};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{SystemTime, UNIX_EPOCH};

/// What happened to one recipient on one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Fail,
    Defer,
}

impl Outcome {
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Defer => "defer",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        match s {
            "ok" => Some(Outcome::Ok),
            "fail" => Some(Outcome::Fail),
            "defer" => Some(Outcome::Defer),
            _ => None,
        }
    }

    pub fn is_final(self) -> bool {
        self != Outcome::Defer
    }
}

/// The latest result of one recipient.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RcptStatus {
    pub time: u64,
    pub outcome: Outcome,
    pub dsn: String,
    pub text: String,
    /// How many attempts this recipient has had.
    pub attempts: u32,
}

/// Everything the log says about a message.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct MessageStatus {
    /// Indexed like the envelope's recipients; `None` where nothing is recorded yet.
    pub recipients: Vec<Option<RcptStatus>>,
    /// Set once the bounce for the failed recipients is committed.
    pub bounce_id: Option<String>,
    /// Set once a delay warning was sent.
    pub warned: bool,
}

impl MessageStatus {
    /// True when recipient `i` has a final result.
    pub fn is_final(&self, i: usize) -> bool {
        self.recipients
            .get(i)
            .and_then(|r| r.as_ref())
            .map(|r| r.outcome.is_final())
            .unwrap_or(false)
    }

    /// The most recent deferral text, for `sloop queue list`.
    pub fn last_error(&self) -> Option<&str> {
        self.recipients
            .iter()
            .flatten()
            .filter(|r| r.outcome != Outcome::Ok)
            .max_by_key(|r| r.time)
            .map(|r| r.text.as_str())
    }
}

/// Path of the log of `id`.
pub fn path(spool: &Spool, id: &str) -> std::path::PathBuf {
    spool.status_dir().join(id)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Appends lines durably (write + fsync) to the log of `id`.
pub fn append(spool: &Spool, id: &str, lines: &[String]) -> Result<(), SpoolError> {
    let p = path(spool, id);
    let mut f = ctx(
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&p),
        "open",
        &p,
    )?;
    let mut buf = String::new();
    for l in lines {
        buf.push_str(l);
        buf.push('\n');
    }
    ctx(f.write_all(buf.as_bytes()), "append to", &p)?;
    ctx(f.sync_data(), "fsync", &p)
}

/// Records that a delivery agent delivered recipients `delivered` (envelope index,
/// enhanced status code, text) of message `id`: one `O_APPEND` write, not fsync'd (see
/// the module comment). The log is created if missing (mode 0600, owned like
/// `status/` even when the worker runs as root) and never followed through a symbolic
/// link.
pub fn record_delivered(
    spool: &Spool,
    id: &str,
    delivered: &[(usize, &str, &str)],
) -> Result<(), SpoolError> {
    use std::os::unix::fs::OpenOptionsExt;
    if delivered.is_empty() {
        return Ok(());
    }
    let p = path(spool, id);
    let mut buf = String::new();
    for (index, dsn, text) in delivered {
        buf.push_str(&result_line(*index, Outcome::Ok, dsn, text));
        buf.push('\n');
    }
    let mut f = ctx(
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&p),
        "open",
        &p,
    )?;
    ctx(super::own_like_dir(&f, &spool.status_dir()), "chown", &p)?;
    ctx(f.write_all(buf.as_bytes()), "append to", &p)
}

/// A result line for recipient `index`.
pub fn result_line(index: usize, outcome: Outcome, dsn: &str, text: &str) -> String {
    format!(
        "{} {} {} {} {}",
        now(),
        index,
        outcome.word(),
        clean(dsn).replace(' ', "_"),
        clean(text)
    )
}

/// The line recording that the bounce `bounce_id` is committed.
pub fn bounced_line(bounce_id: &str) -> String {
    format!("{} - bounced {}", now(), bounce_id)
}

/// The line recording that a delay warning was sent.
pub fn warned_line() -> String {
    format!("{} - warned -", now())
}

/// Reads the log of `id` for a message with `nrcpt` recipients. A missing log is an
/// empty status.
pub fn load(spool: &Spool, id: &str, nrcpt: usize) -> Result<MessageStatus, SpoolError> {
    let p = path(spool, id);
    let text = match fs::read(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return ctx(Err(e), "read", &p),
    };
    Ok(parse(&String::from_utf8_lossy(&text), nrcpt))
}

/// Parses a log's text; lines that do not parse (a torn last line) are skipped.
pub fn parse(text: &str, nrcpt: usize) -> MessageStatus {
    let mut st = MessageStatus {
        recipients: vec![None; nrcpt],
        ..Default::default()
    };
    // Only complete lines count: a crash mid-append leaves a line without its newline.
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    for line in complete.lines() {
        let mut parts = line.splitn(5, ' ');
        let (Some(time), Some(idx), Some(kind)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let Ok(time) = time.parse::<u64>() else {
            continue;
        };
        if idx == "-" {
            match kind {
                "bounced" => st.bounce_id = parts.next().map(str::to_string),
                "warned" => st.warned = true,
                _ => {}
            }
            continue;
        }
        let (Ok(i), Some(outcome)) = (idx.parse::<usize>(), Outcome::parse(kind)) else {
            continue;
        };
        let Some(slot) = st.recipients.get_mut(i) else {
            continue;
        };
        if slot.as_ref().map(|s| s.outcome.is_final()).unwrap_or(false) {
            continue; // a final result is never overwritten
        }
        let attempts = slot.as_ref().map(|s| s.attempts).unwrap_or(0) + 1;
        let dsn = parts.next().unwrap_or("").to_string();
        let text = parts.next().unwrap_or("").to_string();
        *slot = Some(RcptStatus {
            time,
            outcome,
            dsn,
            text,
            attempts,
        });
    }
    st
}

/// Removes the log of `id` (missing is fine).
pub fn remove(spool: &Spool, id: &str) -> Result<(), SpoolError> {
    let p = path(spool, id);
    match fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => ctx(Err(e), "remove", &p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_results_stick_and_torn_lines_are_ignored() {
        let text = "10 0 defer 4.4.1 connection refused\n20 0 ok 2.0.0 delivered\n30 0 defer 4.0.0 late\n25 1 fail 5.1.1 no such user\n40 - bounced ABC\n50 1 ok 2.0.0 torn";
        let st = parse(text, 2);
        let r0 = st.recipients[0].as_ref().expect("r0");
        assert_eq!(r0.outcome, Outcome::Ok);
        assert_eq!(r0.attempts, 2);
        assert_eq!(
            st.recipients[1].as_ref().map(|r| r.outcome),
            Some(Outcome::Fail)
        );
        assert_eq!(st.bounce_id.as_deref(), Some("ABC"));
        assert!(st.is_final(0) && st.is_final(1));
    }

    #[test]
    fn a_workers_delivery_record_is_final_for_the_next_load() {
        let dir = std::env::temp_dir().join(format!("sloop-status-rec-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let spool = Spool::new(&dir);
        spool.ensure_layout().expect("layout");
        let id = "0123456789ABCDEF012345";
        append(
            &spool,
            id,
            &[result_line(1, Outcome::Defer, "4.2.0", "busy")],
        )
        .expect("append");
        record_delivered(
            &spool,
            id,
            &[(1, "2.0.0", "delivered"), (0, "2.0.0", "x\ny")],
        )
        .expect("record");
        let st = load(&spool, id, 2).expect("load");
        assert!(st.is_final(0) && st.is_final(1));
        assert_eq!(
            st.recipients[0].as_ref().map(|r| r.text.as_str()),
            Some("x y")
        );
        // A later deferral (the queue manager seeing a crash) does not undo it.
        append(
            &spool,
            id,
            &[result_line(0, Outcome::Defer, "4.3.0", "died")],
        )
        .expect("append");
        assert!(load(&spool, id, 2).expect("load").is_final(0));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_record_made_as_root_belongs_to_the_owner_of_status() {
        use std::os::unix::fs::MetadataExt;
        if !nix::unistd::Uid::effective().is_root() {
            return; // Only root can create a file for someone else.
        }
        let dir = std::env::temp_dir().join(format!("sloop-status-own-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let spool = Spool::new(&dir);
        spool.ensure_layout().expect("layout");
        let (uid, gid) = (65534, 65534);
        nix::unistd::chown(
            &spool.status_dir(),
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .expect("chown");
        let id = "0123456789ABCDEF012345";
        record_delivered(&spool, id, &[(0, "2.0.0", "ok")]).expect("record");
        let m = fs::metadata(path(&spool, id)).expect("log");
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (uid, gid, 0o600));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn garbage_and_out_of_range_lines_are_skipped() {
        let st = parse("x y z\n5 9 ok 2.0.0 x\n5 0 maybe 2.0.0 x\n", 1);
        assert_eq!(st.recipients, vec![None]);
    }
}
