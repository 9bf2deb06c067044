//! sendmail(8) command-line parsing for `sloop-sendmail` (hand-written: sendmail's
//! option syntax, `-fsender` or `-f sender`, grouped `-ti`, `-oi`, `-bp`, `-q1h`, is
//! getopt's, not clap's).
//!
//! The accepted letters are Postfix sendmail's set. Options Sloop has no use for
//! (`-oem`, `-odi`, `-odb`, `-oQ...`, `-B...`, `-L...`, `-Am`, `-h`, `-p`, `-x`, ...)
//! are accepted and ignored, as sendmail does; an unknown letter or a mode Sloop does
//! not provide (`-bs`, `-bd`, ...) is a usage error (EX_USAGE). Options may appear
//! before or after the recipients; `--` ends them.

use std::path::PathBuf;

/// What the invocation asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// `-bm` (the default): read a message on stdin and queue it.
    #[default]
    Deliver,
    /// `-bp`, or invoked as `mailq`: list the queue.
    List,
    /// `-q`: retry deferred mail now.
    Flush,
    /// `-bi`, or invoked as `newaliases`: check the aliases file and count its entries.
    Newaliases,
}

/// The parsed command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub mode: Mode,
    /// `-t`: take recipients from To/Cc/Bcc.
    pub extract: bool,
    /// `-i` / `-oi`: a lone `.` line does not end the input.
    pub ignore_dots: bool,
    /// `-f` / `-r`: the envelope sender (angle brackets stripped; `<>` is empty).
    pub sender: Option<String>,
    /// `-F`: the sender's full name for a generated `From:`.
    pub full_name: Option<String>,
    pub verbose: bool,
    /// `-C FILE`: the configuration file.
    pub config: Option<PathBuf>,
    /// `-N`: DSN NOTIFY for every recipient.
    pub notify: Option<String>,
    /// `-R`: DSN RET (`full` or `hdrs`).
    pub ret: Option<String>,
    /// `-V`: DSN ENVID.
    pub envid: Option<String>,
    pub recipients: Vec<String>,
}

/// Letters that take a value, attached (`-fx`) or as the next argument (`-f x`).
const WITH_VALUE: &[u8] = b"ABCFLNORVXbefhopr";
/// Letters that take no value.
const FLAGS: &[u8] = b"46GIUcimntvx";

/// A command line sendmail would refuse (exit EX_USAGE); the text is getopt's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageError {
    /// A letter sendmail does not know.
    IllegalOption(char),
    /// A letter that takes a value came last.
    MissingArgument(char),
    /// A `-b` mode Sloop does not provide (`-bs`, `-bd`, ...).
    UnsupportedMode(String),
}

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UsageError::IllegalOption(c) => write!(f, "illegal option -- {c}"),
            UsageError::MissingArgument(c) => write!(f, "option requires an argument -- {c}"),
            UsageError::UnsupportedMode(m) => write!(f, "-b{m} is not supported by sloop-sendmail"),
        }
    }
}

impl std::error::Error for UsageError {}

/// Parses the arguments after `argv[0]`; `as_mailq` when invoked as `mailq`.
pub fn parse(args: &[String], as_mailq: bool) -> Result<Options, UsageError> {
    let mut o = Options::default();
    if as_mailq {
        o.mode = Mode::List;
    }
    let mut rest = args.iter();
    let mut options_done = false;
    while let Some(arg) = rest.next() {
        if options_done || !arg.starts_with('-') || arg == "-" {
            add_recipients(&mut o, arg);
        } else if arg == "--" {
            options_done = true;
        } else {
            parse_cluster(&mut o, arg, &mut rest)?;
        }
    }
    Ok(o)
}

/// One option argument, getopt style: flags may be grouped (`-ti`); a letter taking a
/// value takes the rest of the argument (`-fme`) or else the next one (`-f me`).
fn parse_cluster<'a>(
    o: &mut Options,
    arg: &str,
    rest: &mut impl Iterator<Item = &'a String>,
) -> Result<(), UsageError> {
    for (j, letter) in arg.bytes().enumerate().skip(1) {
        if letter == b'q' {
            o.mode = Mode::Flush; // -q, -q1h, -qR...: retry now
            return Ok(());
        }
        if FLAGS.contains(&letter) {
            apply_flag(o, letter);
            continue;
        }
        if !WITH_VALUE.contains(&letter) {
            return Err(UsageError::IllegalOption(letter as char));
        }
        let value = match arg.get(j + 1..) {
            Some(v) if !v.is_empty() => v.to_string(),
            _ => rest
                .next()
                .cloned()
                .ok_or(UsageError::MissingArgument(letter as char))?,
        };
        return apply_value(o, letter, value);
    }
    Ok(())
}

fn apply_flag(o: &mut Options, letter: u8) {
    match letter {
        b't' => o.extract = true,
        b'i' => o.ignore_dots = true,
        b'v' => o.verbose = true,
        _ => {} // -4 -6 -G -I -U -c -m -n -x: accepted, no effect
    }
}

fn apply_value(o: &mut Options, letter: u8, value: String) -> Result<(), UsageError> {
    match letter {
        b'b' => o.mode = mode(&value)?,
        b'o' if value.starts_with('i') => o.ignore_dots = true,
        b'O' if value.eq_ignore_ascii_case("IgnoreDots") => o.ignore_dots = true,
        b'f' | b'r' => o.sender = Some(strip_brackets(&value)),
        b'F' => o.full_name = Some(value),
        b'C' => o.config = Some(PathBuf::from(value)),
        b'N' => o.notify = Some(value.to_ascii_uppercase()),
        b'R' => o.ret = Some(value.to_ascii_uppercase()),
        b'V' => o.envid = Some(value),
        _ => {} // -A -B -L -X -e -h -o.. -O.. -p: accepted and ignored
    }
    Ok(())
}

fn mode(value: &str) -> Result<Mode, UsageError> {
    match value {
        "m" => Ok(Mode::Deliver),
        "p" => Ok(Mode::List),
        "i" => Ok(Mode::Newaliases),
        other => Err(UsageError::UnsupportedMode(other.to_string())),
    }
}

/// `<a@b>` -> `a@b`; `<>` -> the null sender.
fn strip_brackets(s: &str) -> String {
    let t = s.trim();
    t.strip_prefix('<')
        .and_then(|x| x.strip_suffix('>'))
        .unwrap_or(t)
        .to_string()
}

/// An operand may hold several comma-separated addresses (`a@x, b@y`).
fn add_recipients(o: &mut Options, arg: &str) {
    o.recipients
        .extend(arg.split(',').map(strip_brackets).filter(|a| !a.is_empty()));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn p(s: &str) -> Result<Options, UsageError> {
        let args: Vec<String> = s.split_whitespace().map(str::to_string).collect();
        parse(&args, false)
    }

    #[test]
    fn common_invocations() {
        let o = p("-t -i").unwrap();
        assert!(o.extract && o.ignore_dots && o.mode == Mode::Deliver);
        let o = p("-ti -oem -odi -fbounce@x.test -FCron user@y.test,z@y.test").unwrap();
        assert!(o.extract && o.ignore_dots);
        assert_eq!(o.sender.as_deref(), Some("bounce@x.test"));
        assert_eq!(o.full_name.as_deref(), Some("Cron"));
        assert_eq!(o.recipients, vec!["user@y.test", "z@y.test"]);
        let o = p("-f <> -oi -- -odd@x.test").unwrap();
        assert_eq!(o.sender.as_deref(), Some(""));
        assert!(o.ignore_dots);
        assert_eq!(o.recipients, vec!["-odd@x.test"]);
        let o = p("-r me@x.test -C /etc/s.toml -N success,failure -Rhdrs -V e1 a@b").unwrap();
        assert_eq!(o.sender.as_deref(), Some("me@x.test"));
        assert_eq!(o.config, Some(PathBuf::from("/etc/s.toml")));
        assert_eq!(o.notify.as_deref(), Some("SUCCESS,FAILURE"));
        assert_eq!(o.ret.as_deref(), Some("HDRS"));
        assert_eq!(o.envid.as_deref(), Some("e1"));
    }

    #[test]
    fn modes_and_ignored_legacy_flags() {
        assert_eq!(p("-bp").unwrap().mode, Mode::List);
        assert_eq!(p("-bi").unwrap().mode, Mode::Newaliases);
        assert_eq!(p("-q").unwrap().mode, Mode::Flush);
        assert_eq!(p("-q1h").unwrap().mode, Mode::Flush);
        assert_eq!(parse(&[], true).unwrap().mode, Mode::List);
        let o = p("-oQ/var/x -Nnever -B8BITMIME -Lsm -Am -h 5 -v -bm a@b").unwrap();
        assert!(o.verbose);
        assert_eq!(o.mode, Mode::Deliver);
        assert_eq!(o.recipients, vec!["a@b"]);
    }

    #[test]
    fn usage_errors() {
        assert!(p("-bs").is_err());
        assert!(p("-bd").is_err());
        assert!(p("-k").is_err());
        assert!(p("-f").is_err());
    }
}
