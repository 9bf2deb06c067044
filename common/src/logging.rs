//! One line per event on stderr: `<program>[<pid>]: <level>: <message>`, in the spirit
//! of Postfix's syslog lines. Messages about a queued message start with its queue ID
//! (`0193AB...: to=<..>, relay=.., status=sent`), so `grep ID` shows its whole life.
//! Under systemd, stderr goes to the journal; `sloopd` children inherit its stderr.

use std::io::Write;

/// Initialises logging for `program` at `level`. `RUST_LOG` overrides the level.
pub fn init(program: &'static str, level: log::LevelFilter) {
    let pid = std::process::id();
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    builder.format(move |buf, record| {
        let ts = chrono_like_now();
        writeln!(
            buf,
            "{ts} {program}[{pid}]: {}: {}",
            record.level().as_str().to_ascii_lowercase(),
            record.args()
        )
    });
    let _ = builder.try_init();
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
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(rfc5322_date(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_795_883_642),
            "Sat, 28 Nov 2026 16:34:02 +0000"
        );
    }
}
