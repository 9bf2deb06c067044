//! One line per event, in the spirit of Postfix's syslog lines. Messages about a queued
//! message start with its queue ID (`0193AB...: to=<..>, relay=.., status=sent`), so
//! `grep ID` shows its whole life.
//!
//! Two targets (`log.target`):
//! - `stderr`: `<timestamp> <program>[<pid>]: <level>: <message>`. Under systemd,
//!   stderr goes to the journal; `sloopd`'s children inherit its stderr.
//! - `syslog`: each line is one RFC 3164 datagram to `log.syslog_socket` (`/dev/log`),
//!   `<PRI>sloop/<name>[<pid>]: <message>` (`log.syslog_name` replaces `sloop`, as
//!   Postfix's `syslog_name`), with facility `log.facility` and the
//!   severity of the level; as in Postfix, informational lines carry no level word and
//!   the others start with `warning: `, `error: ` or `debug: `. The timestamp is left
//!   to the syslog daemon (it stamps what it receives in local time). When the socket
//!   cannot be reached, the line goes to stderr instead, so nothing is lost silently.

use crate::config::{LogConfig, LogTarget};
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Mutex;

/// Initialises logging for `program` at `level` on stderr. `RUST_LOG` overrides the
/// level.
pub fn init(program: &'static str, level: log::LevelFilter) {
    let pid = std::process::id();
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    builder.format(move |buf, record| {
        let ts = chrono_like_now();
        write!(
            buf,
            "{ts} {program}[{pid}]: {}: ",
            record.level().as_str().to_ascii_lowercase()
        )?;
        write_one_line(buf, *record.args())?;
        buf.write_all(b"\n")
    });
    let _ = builder.try_init();
}

/// The one-line rule both targets apply: a control character (C0, DEL, C1) becomes a
/// space, so one event stays one line and no escape sequence reaches a terminal.
fn flatten(c: char) -> char {
    if c.is_control() {
        ' '
    } else {
        c
    }
}

/// Writes `args` with every control character as a space (`flatten`, as `syslog_line` does): one
/// event stays one line, and no escape sequence a client sent reaches a terminal.
/// (env_logger is built without its colour support, which stripped escapes only when
/// stderr was not a terminal, and cost a parser pass over every line.)
pub fn write_one_line(out: &mut impl Write, args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    struct OneLine<'a, W: Write> {
        out: &'a mut W,
        err: Option<std::io::Error>,
    }
    impl<W: Write> std::fmt::Write for OneLine<'_, W> {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            let r = if s.chars().any(char::is_control) {
                s.chars().try_for_each(|c| {
                    let c = flatten(c);
                    self.out.write_all(c.encode_utf8(&mut [0; 4]).as_bytes())
                })
            } else {
                self.out.write_all(s.as_bytes())
            };
            r.map_err(|e| {
                self.err = Some(e);
                std::fmt::Error
            })
        }
    }
    let mut w = OneLine { out, err: None };
    match std::fmt::write(&mut w, args) {
        Ok(()) => Ok(()),
        Err(_) => Err(w
            .err
            .unwrap_or_else(|| std::io::Error::other("formatting a log line failed"))),
    }
}

/// Initialises logging as `log` says: on stderr as `program`, or to syslog as
/// `<log.syslog_name>/<syslog_name>` (Postfix's names: `smtpd`, `qmgr`, `local`,
/// `smtp`, `pickup`, `master`, ...).
pub fn init_with(program: &'static str, syslog_name: &str, log: &LogConfig) {
    if log.target == LogTarget::Stderr {
        return init(program, log.level);
    }
    let mut level = log.level;
    if let Ok(spec) = std::env::var("RUST_LOG") {
        if let Ok(l) = spec.trim().parse::<log::LevelFilter>() {
            level = l;
        }
    }
    let logger = SyslogLogger {
        ident: syslog_ident(&log.syslog_name, syslog_name),
        pid: std::process::id(),
        facility: log.facility.code(),
        level,
        socket: log.syslog_socket.clone(),
        conn: Mutex::new(None),
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
}

/// A program's syslog name: `sloop/smtpd`, or `<prefix>/smtpd` with `log.syslog_name`
/// (an empty prefix, as in a `LogConfig` built by hand, stands for `sloop`).
pub fn syslog_ident(prefix: &str, program: &str) -> String {
    let prefix = if prefix.is_empty() { "sloop" } else { prefix };
    format!("{prefix}/{program}")
}

/// One syslog datagram (RFC 3164 without a timestamp) for a record.
pub fn syslog_line(facility: u8, ident: &str, pid: u32, level: log::Level, msg: &str) -> String {
    let (severity, word) = match level {
        log::Level::Error => (3, "error: "),
        log::Level::Warn => (4, "warning: "),
        log::Level::Info => (6, ""),
        log::Level::Debug | log::Level::Trace => (7, "debug: "),
    };
    let pri = u32::from(facility) * 8 + severity;
    let text: String = msg.chars().map(flatten).collect();
    format!("<{pri}>{ident}[{pid}]: {word}{text}")
}

struct SyslogLogger {
    ident: String,
    pid: u32,
    facility: u8,
    level: log::LevelFilter,
    socket: PathBuf,
    conn: Mutex<Option<UnixDatagram>>,
}

impl SyslogLogger {
    /// Sends one datagram, connecting (again) when needed.
    fn send(&self, line: &str) -> std::io::Result<()> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..2 {
            if conn.is_none() {
                let s = UnixDatagram::unbound()?;
                s.connect(&self.socket)?;
                *conn = Some(s);
            }
            if let Some(s) = conn.as_ref() {
                match s.send(line.as_bytes()) {
                    Ok(_) => return Ok(()),
                    Err(_) => *conn = None,
                }
            }
        }
        Err(std::io::Error::other("syslog socket refused the line"))
    }
}

impl log::Log for SyslogLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let msg = record.args().to_string();
        let line = syslog_line(self.facility, &self.ident, self.pid, record.level(), &msg);
        if let Err(e) = self.send(&line) {
            let _ = writeln!(
                std::io::stderr(),
                "{} {}[{}]: {}: {msg} (syslog {}: {e})",
                chrono_like_now(),
                self.ident,
                self.pid,
                record.level().as_str().to_ascii_lowercase(),
                self.socket.display()
            );
        }
    }

    fn flush(&self) {}
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` without pulling in a date crate.
fn chrono_like_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (y, mo, d) = civil_from_days((secs / 86400) as i64);
    let rem = secs % 86400;
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's
/// algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A moment in UTC broken into the fields date formats need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcParts {
    pub weekday: &'static str,
    pub month: &'static str,
    pub year: i64,
    pub day: u32,
    pub hour: u64,
    pub minute: u64,
    pub second: u64,
}

impl UtcParts {
    /// `secs` since the epoch, broken down (English day and month abbreviations).
    pub fn from_secs(secs: u64) -> UtcParts {
        const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let days = (secs / 86400) as i64;
        let (year, m, day) = civil_from_days(days);
        let rem = secs % 86400;
        UtcParts {
            weekday: DAYS[(days % 7) as usize],
            month: MONTHS[(m as usize).saturating_sub(1) % 12],
            year,
            day,
            hour: rem / 3600,
            minute: rem % 3600 / 60,
            second: rem % 60,
        }
    }
}

/// An RFC 5322 date (`Sat, 28 Nov 2026 16:34:02 +0000`) for `secs` since the epoch, in UTC.
pub fn rfc5322_date(secs: u64) -> String {
    let t = UtcParts::from_secs(secs);
    format!(
        "{}, {} {} {} {:02}:{:02}:{:02} +0000",
        t.weekday, t.day, t.month, t.year, t.hour, t.minute, t.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_lines_look_like_postfix() {
        let l = syslog_line(
            2,
            "sloop/smtpd",
            42,
            log::Level::Info,
            "ABC: client=x[1.2.3.4]",
        );
        assert_eq!(l, "<22>sloop/smtpd[42]: ABC: client=x[1.2.3.4]");
        let w = syslog_line(2, "sloop/qmgr", 7, log::Level::Warn, "a\nb");
        assert_eq!(w, "<20>sloop/qmgr[7]: warning: a b");
        assert!(syslog_line(3, "x", 1, log::Level::Error, "e").starts_with("<27>x[1]: error: "));
    }

    #[test]
    fn stderr_lines_stay_one_line_without_escapes() {
        let mut out = Vec::new();
        let helo = "evil\x1b[2J\r\nfake: line\u{85}";
        write_one_line(&mut out, format_args!("ABC: helo=<{helo}> ok")).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ABC: helo=<evil [2J  fake: line > ok"
        );
        let mut out = Vec::new();
        write_one_line(&mut out, format_args!("plain {} é", 42)).unwrap();
        assert_eq!(out, "plain 42 é".as_bytes());
    }

    #[test]
    fn the_syslog_name_prefixes_every_program() {
        assert_eq!(syslog_ident("sloop", "smtpd"), "sloop/smtpd");
        assert_eq!(syslog_ident("postfix", "qmgr"), "postfix/qmgr");
        assert_eq!(syslog_ident("", "local"), "sloop/local");
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(rfc5322_date(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_795_883_642),
            "Sat, 28 Nov 2026 16:34:02 +0000"
        );
    }
}
