//! The filter configuration through `sloop config check`: every TOML example of
//! docs/filters.md is a valid configuration, a broken one is reported entry by entry
//! with file, line and fix, and `--show` renders `[[policy]]`/`[[milter]]` tables
//! that load again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sloop_tests::{bin, TestDir};
use std::path::Path;
use std::process::Command;

/// Exit code, stdout, stderr of `sloop config check -c FILE [extra]`.
fn check(file: &Path, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin("sloop"))
        .args(["config", "check", "-c", file.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The ```toml blocks of a Markdown text.
fn toml_blocks(md: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in md.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```toml") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), l) => {
                block.push_str(l);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn every_example_of_the_filters_page_is_a_valid_config() {
    let dir = TestDir::new("cfg-filters-doc");
    let md =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/filters.md"))
            .unwrap();
    let blocks = toml_blocks(&md);
    assert!(blocks.len() >= 4, "examples found: {}", blocks.len());
    for (i, block) in blocks.iter().enumerate() {
        let file = dir.path.join(format!("example{i}.toml"));
        std::fs::write(&file, block).unwrap();
        let (code, stdout, stderr) = check(&file, &[]);
        assert_eq!(code, 0, "example {i}:\n{block}\n{stderr}");
        assert!(stdout.contains("config OK"), "{stdout}");
    }
}

#[test]
fn a_broken_filter_config_is_reported_entry_by_entry() {
    let dir = TestDir::new("cfg-filters-bad");
    let file = dir.path.join("bad.toml");
    std::fs::write(
        &file,
        "[access]\nsender = [\n  \"spammer@example.com reject\",\n  \"192.0.2.1 reject\",\n]\n\n\
         [[policy]]\nname = \"postgrey\"\nsocket = \"inet:10023@127.0.0.1\"\n\n\
         [[policy]]\nname = \"postgrey\"\nsocket = \"unix:/run/postgrey.sock\"\nstage = \"rctp\"\ntimout = \"5s\"\n",
    )
    .unwrap();
    let (code, _, stderr) = check(&file, &[]);
    assert_eq!(code, 78, "{stderr}");
    let shown = file.display().to_string();
    for line in [
        format!("{shown}:4: access.sender[2]: found \"192.0.2.1 reject\""),
        format!("{shown}:9: policy[1].socket: found \"inet:10023@127.0.0.1\"; expected inet:127.0.0.1:10023"),
        format!("{shown}:12: policy[2].name: found \"postgrey\", the name of policy[1] too"),
        format!("{shown}:14: policy[2].stage: found \"rctp\"; expected one of: connect, helo, mail, rcpt, data, eom"),
        format!("{shown}:15: policy[2].timout: found an unknown key"),
    ] {
        assert!(stderr.contains(&line), "missing {line:?} in:\n{stderr}");
    }
    assert!(stderr.contains("5 errors"), "{stderr}");
}

#[test]
fn show_renders_the_hook_tables_so_they_load_again() {
    let dir = TestDir::new("cfg-filters-show");
    let file = dir.path.join("hooks.toml");
    std::fs::write(
        &file,
        "[[milter]]\nname = \"opendkim\"\nsocket = \"unix:opendkim.sock\"\nlisteners = [\"local\"]\n\
         [[policy]]\nname = \"early\"\nsocket = \"inet:[::1]:10023\"\nstage = \"connect\"\n\
         [access]\nclient = ['/mx[0-9]+\\.bad\\.example/ reject']\n",
    )
    .unwrap();
    let (code, shown, stderr) = check(&file, &["--show"]);
    assert_eq!(code, 0, "{stderr}");
    // Defaults filled in, the relative socket made absolute, the stage's on_error.
    let socket = format!(
        "socket = \"unix:{}\"",
        dir.path.join("opendkim.sock").display()
    );
    for part in [
        "[[policy]]\nname = \"early\"\nsocket = \"inet:[::1]:10023\"\nstage = \"connect\"\ntimeout = \"5s\"\ntries = 2\non_error = \"shutdown\"\nlisteners = [\"smtpd\"]\n",
        socket.as_str(),
        "content_timeout = \"5m\"",
    ] {
        assert!(shown.contains(part), "missing {part:?} in:\n{shown}");
    }
    // The rendering without its first (comment) and last ("config OK") lines, and
    // without the marks of defaulted keys, which are all given the second time.
    let body = |s: &str| {
        let lines: Vec<&str> = s.lines().collect();
        lines[1..lines.len() - 1]
            .iter()
            .map(|l| l.trim_end_matches("  # default"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let again = dir.path.join("again.toml");
    std::fs::write(&again, body(&shown)).unwrap();
    let (code, shown_again, stderr) = check(&again, &["--show"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(body(&shown_again), body(&shown));
}
