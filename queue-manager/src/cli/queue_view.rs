//! The read-only queue views of the `sloop` CLI: `queue list`, `queue show`,
//! `queue stats`, and the spool part of `status`.
//!
//! Everything is read straight from the spool (state directories, queue file trailers,
//! status logs), so it works whether or not the daemons run. The queue manager may move
//! a message while we look; a message that vanished between the directory listing and
//! the read is looked up once more in every state, and skipped if it is gone (it was
//! delivered meanwhile). A queue file whose envelope cannot be read is still listed, with
//! the reason as its error, so an operator sees it.

use super::ToolError;
use sloop_common::exitcode;
use sloop_common::spool::{open_message, queue_id, status, Envelope, QueueState, Spool};
use std::io::{BufRead, BufReader, Read, Write};
use std::time::{SystemTime, UNIX_EPOCH};

/// One line of `sloop queue list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry {
    pub id: String,
    pub state: QueueState,
    pub size: u64,
    pub arrival: u64,
    pub sender: String,
    pub recipients: Vec<String>,
    pub last_error: Option<String>,
}

/// Counts per state and the age of the oldest message.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    pub incoming: usize,
    pub active: usize,
    pub deferred: usize,
    pub hold: usize,
    pub total: usize,
    pub oldest_id: Option<String>,
    pub oldest_age_secs: Option<u64>,
}

/// Fails with a clear message when `spool` has no queue layout.
pub fn check_spool(spool: &Spool) -> Result<(), ToolError> {
    if spool.exists() {
        return Ok(());
    }
    Err(ToolError::new(
        exitcode::EX_NOINPUT,
        format!(
            "cannot read spool {}: not a Sloop spool (missing state directories)",
            spool.root().display()
        ),
    ))
}

/// IDs in `state`, with spool errors made into tool errors.
pub fn ids_in(spool: &Spool, state: QueueState) -> Result<Vec<String>, ToolError> {
    spool.list(state).map_err(|e| {
        ToolError::new(
            exitcode::EX_IOERR,
            format!("cannot read spool {}: {e}", spool.root().display()),
        )
    })
}

/// Every message in the queue, oldest first.
pub fn collect(spool: &Spool) -> Result<Vec<Entry>, ToolError> {
    check_spool(spool)?;
    let mut entries = Vec::new();
    for state in QueueState::ALL {
        for id in ids_in(spool, state)? {
            if let Some(e) = entry(spool, &id, state) {
                entries.push(e);
            }
        }
    }
    entries.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(entries)
}

/// Reads one message's entry; `None` when it left the queue meanwhile.
fn entry(spool: &Spool, id: &str, state: QueueState) -> Option<Entry> {
    let path = spool.path(state, id);
    let (state, env) = match Spool::read_envelope(&path) {
        Ok(env) => (state, Ok(env)),
        Err(_) => {
            let (state, path) = spool.find(id)?;
            (state, Spool::read_envelope(&path))
        }
    };
    Some(match env {
        Ok(env) => entry_of(spool, id, state, env),
        Err(e) => Entry {
            id: id.to_string(),
            state,
            size: 0,
            arrival: queue_id::timestamp(id).unwrap_or(0),
            sender: String::new(),
            recipients: Vec::new(),
            last_error: Some(format!("unreadable queue file: {e}")),
        },
    })
}

/// The file name is the ID (the spool's key), whatever the trailer says.
fn entry_of(spool: &Spool, id: &str, state: QueueState, env: Envelope) -> Entry {
    let last_error = status::load(spool, id, env.recipients.len())
        .ok()
        .and_then(|st| st.last_error().map(str::to_string));
    Entry {
        id: id.to_string(),
        state,
        size: env.size,
        arrival: env.arrival,
        sender: env.sender,
        recipients: env.recipients.into_iter().map(|r| r.address).collect(),
        last_error,
    }
}

/// `sloop queue list`: a mailq(1)-like table, or JSON.
pub fn list(spool: &Spool, json: bool, out: &mut impl Write) -> Result<(), ToolError> {
    let entries = collect(spool)?;
    if json {
        return write_json(out, &entries);
    }
    if entries.is_empty() {
        return write_out(out, "Mail queue is empty\n");
    }
    let mut text = format!(
        "{:<22} {:>9} {:<19} {:<8} Sender/Recipients\n",
        "Queue ID", "Size", "Arrival", "State"
    );
    for e in &entries {
        text.push_str(&format!(
            "{:<22} {:>9} {:<19} {:<8} <{}>\n",
            e.id,
            e.size,
            iso_time(e.arrival),
            e.state,
            e.sender
        ));
        if let Some(err) = &e.last_error {
            text.push_str(&format!("{:>24}({err})\n", ""));
        }
        for r in &e.recipients {
            text.push_str(&format!("{:>24}{r}\n", ""));
        }
    }
    let total: u64 = entries.iter().map(|e| e.size).sum();
    text.push_str(&format!(
        "-- {} Kbytes in {} Request{}.\n",
        total.div_ceil(1024),
        entries.len(),
        if entries.len() == 1 { "" } else { "s" }
    ));
    write_out(out, &text)
}

/// Counts per state and the oldest message (by the arrival time in its ID).
pub fn stats(spool: &Spool) -> Result<Stats, ToolError> {
    check_spool(spool)?;
    let mut st = Stats::default();
    for state in QueueState::ALL {
        let ids = ids_in(spool, state)?;
        let n = ids.len();
        match state {
            QueueState::Incoming => st.incoming = n,
            QueueState::Active => st.active = n,
            QueueState::Deferred => st.deferred = n,
            QueueState::Hold => st.hold = n,
        }
        st.total += n;
        if let Some(first) = ids.into_iter().next() {
            if st.oldest_id.as_ref().map(|o| first < *o).unwrap_or(true) {
                st.oldest_id = Some(first);
            }
        }
    }
    st.oldest_age_secs = st
        .oldest_id
        .as_deref()
        .and_then(queue_id::timestamp)
        .map(|t| now().saturating_sub(t));
    Ok(st)
}

/// `sloop queue stats`.
pub fn print_stats(spool: &Spool, json: bool, out: &mut impl Write) -> Result<(), ToolError> {
    let st = stats(spool)?;
    if json {
        return write_json(out, &st);
    }
    let mut text = format!(
        "incoming: {}\nactive: {}\ndeferred: {}\nhold: {}\ntotal: {}\n",
        st.incoming, st.active, st.deferred, st.hold, st.total
    );
    match (&st.oldest_id, st.oldest_age_secs) {
        (Some(id), Some(age)) => text.push_str(&format!("oldest: {id} ({})\n", age_text(age))),
        _ => text.push_str("oldest: -\n"),
    }
    write_out(out, &text)
}

/// `sloop queue show ID [--body]`.
pub fn show(spool: &Spool, id: &str, body: bool, out: &mut impl Write) -> Result<(), ToolError> {
    check_spool(spool)?;
    let (state, path) = find(spool, id)?;
    let unreadable = |e: &dyn std::fmt::Display| {
        ToolError::new(
            exitcode::EX_IOERR,
            format!("{id}: cannot read queue file: {e}"),
        )
    };
    let (env, mut message) = open_message(&path).map_err(|e| unreadable(&e))?;
    let st = status::load(spool, id, env.recipients.len()).map_err(|e| unreadable(&e))?;
    let mut text = envelope_text(id, &env, state);
    text.push_str("recipients:\n");
    for (i, r) in env.recipients.iter().enumerate() {
        let result = rcpt_text(st.recipients.get(i).and_then(|s| s.as_ref()));
        text.push_str(&format!("  <{}>: {result}\n", r.address));
    }
    if let Some(b) = &st.bounce_id {
        text.push_str(&format!("bounce: {b}\n"));
    }
    let mut content = Vec::new();
    if body {
        text.push_str("message:\n");
        message
            .read_to_end(&mut content)
            .map_err(|e| unreadable(&e))?;
    } else {
        text.push_str("headers:\n");
        content = headers(message).map_err(|e| unreadable(&e))?;
    }
    write_out(out, &text)?;
    out.write_all(&content)
        .map_err(|e| ToolError::new(exitcode::EX_IOERR, format!("cannot write output: {e}")))
}

/// Validates `id` and finds it in the spool.
pub fn find(spool: &Spool, id: &str) -> Result<(QueueState, std::path::PathBuf), ToolError> {
    if !queue_id::is_valid(id) {
        return Err(ToolError::new(
            exitcode::EX_USAGE,
            format!("invalid queue ID: {id:?}"),
        ));
    }
    spool
        .find(id)
        .ok_or_else(|| ToolError::new(exitcode::EX_NOINPUT, format!("no such message: {id}")))
}

/// A recipient's latest result for `queue show`.
fn rcpt_text(st: Option<&status::RcptStatus>) -> String {
    match st {
        Some(s) => format!(
            "{} {} {} (attempts {}, at {})",
            s.outcome.word(),
            s.dsn,
            s.text,
            s.attempts,
            iso_time(s.time)
        ),
        None => "pending".to_string(),
    }
}

fn envelope_text(id: &str, env: &Envelope, state: QueueState) -> String {
    let mut text = format!(
        "id: {id}\nstate: {state}\narrival: {}\nsize: {}\nsender: {}\n",
        iso_time(env.arrival),
        env.size,
        env.sender_display()
    );
    let optional = [
        ("client", env.client.clone()),
        ("envid", env.envid.clone()),
        ("ret", env.ret.map(|r| format!("{r:?}").to_uppercase())),
        ("body", env.body.clone()),
        ("smtputf8", env.smtputf8.then(|| "yes".to_string())),
        ("held by filter", env.hold.clone()),
    ];
    for (name, value) in optional {
        if let Some(v) = value {
            text.push_str(&format!("{name}: {v}\n"));
        }
    }
    text
}

/// The header section of a message (up to and excluding the empty line).
fn headers(message: impl Read) -> std::io::Result<Vec<u8>> {
    let mut reader = BufReader::new(message);
    let mut out = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        out.extend_from_slice(&line);
    }
    Ok(out)
}

fn write_json<T: serde::Serialize>(out: &mut impl Write, value: &T) -> Result<(), ToolError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| ToolError::new(exitcode::EX_SOFTWARE, format!("cannot encode JSON: {e}")))?;
    write_out(out, &format!("{text}\n"))
}

pub(crate) fn write_out(out: &mut impl Write, text: &str) -> Result<(), ToolError> {
    out.write_all(text.as_bytes())
        .map_err(|e| ToolError::new(exitcode::EX_IOERR, format!("cannot write output: {e}")))
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `YYYY-MM-DD HH:MM:SS` in UTC.
pub fn iso_time(secs: u64) -> String {
    let (y, m, d) = sloop_common::logging::civil_from_days((secs / 86400) as i64);
    let rem = secs % 86400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A short human age: `42s`, `5m 3s`, `2h 10m`, `3d 4h`.
pub fn age_text(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_ages() {
        assert_eq!(iso_time(0), "1970-01-01 00:00:00");
        assert_eq!(iso_time(1_795_883_642), "2026-11-28 16:34:02");
        assert_eq!(age_text(42), "42s");
        assert_eq!(age_text(303), "5m 3s");
        assert_eq!(age_text(7800), "2h 10m");
        assert_eq!(age_text(3 * 86400 + 4 * 3600), "3d 4h");
    }

    #[test]
    fn headers_stop_at_the_empty_line() {
        let msg = b"Subject: a\r\nTo: b\r\n\r\nbody\r\n".as_slice();
        assert_eq!(headers(msg).ok(), Some(b"Subject: a\r\nTo: b\r\n".to_vec()));
    }
}
