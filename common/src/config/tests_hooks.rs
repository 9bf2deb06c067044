//! The filter hooks' configuration: `[access]`, `[[policy]]`, `[[milter]]`.

use super::*;
use std::time::Duration;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("/etc/sloop/test.toml"), text)
}

fn issues(text: &str) -> Vec<ConfigIssue> {
    match parse(text) {
        Err(ConfigError::Invalid(v)) => v,
        other => panic!("expected invalid config, got {other:?}"),
    }
}

/// The one issue of `text`, which must name `key`.
fn one(text: &str, key: &str) -> ConfigIssue {
    let found = issues(text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].key, key, "{found:?}");
    found.into_iter().next().expect("one issue")
}

const PLAN_EXAMPLE: &str = r#"
[[policy]]
name = "postgrey"
socket = "inet:127.0.0.1:10023"
stage = "rcpt"
timeout = "5s"
tries = 2
on_error = "tempfail"
listeners = ["smtpd"]

[[policy]]
name = "early"
socket = "unix:/run/policy.sock"
stage = "connect"

[[milter]]
name = "opendkim"
socket = "inet:127.0.0.1:8891"
on_error = "tempfail"
connect_timeout = "5s"
command_timeout = "30s"
content_timeout = "300s"
listeners = ["smtpd", "submission", "submissions", "local"]

[[milter]]
name = "rspamd"
socket = "inet:[::1]:11332"

[access]
client = ["192.0.2.0/24 reject", "198.51.100.7 accept", ".dialup.example.net tempfail Try later", "/^mx[0-9]+\\.bad\\.example$/ reject"]
helo = ["localhost reject You are not me"]
sender = ["spammer@example.com reject", "example.org hold Review", ".example.net discard"]
recipient = ["abuse@example.com accept"]
"#;

#[test]
fn the_documented_example_loads_with_its_defaults() {
    let cfg = parse(PLAN_EXAMPLE).expect("valid");
    let h = &cfg.hooks;
    assert_eq!(
        h.policies[0],
        PolicyHook {
            name: "postgrey".into(),
            socket: HookSocket::Inet {
                host: "127.0.0.1".into(),
                port: 10023
            },
            stage: HookStage::Rcpt,
            timeout: Duration::from_secs(5),
            tries: 2,
            on_error: OnError::Tempfail,
            listeners: vec![HookListener::Smtpd],
        }
    );
    // Defaults: on_error follows the stage; timeout, tries and listeners as documented.
    let early = &h.policies[1];
    assert_eq!(early.socket, HookSocket::Unix("/run/policy.sock".into()));
    assert_eq!(early.stage, HookStage::Connect);
    assert_eq!(early.on_error, OnError::Shutdown);
    assert_eq!((early.timeout, early.tries), (Duration::from_secs(5), 2));
    assert_eq!(early.listeners, vec![HookListener::Smtpd]);
    assert_eq!(h.milters[0].listeners.len(), 4);
    let rspamd = &h.milters[1];
    assert_eq!(
        rspamd.socket,
        HookSocket::Inet {
            host: "::1".into(),
            port: 11332
        }
    );
    assert_eq!(rspamd.socket.to_string(), "inet:[::1]:11332");
    assert_eq!(rspamd.on_error, OnError::Tempfail);
    assert_eq!(
        (
            rspamd.connect_timeout,
            rspamd.command_timeout,
            rspamd.content_timeout
        ),
        (
            Duration::from_secs(5),
            Duration::from_secs(30),
            Duration::from_secs(300)
        )
    );
    assert_eq!(
        rspamd.listeners,
        vec![
            HookListener::Smtpd,
            HookListener::Submission,
            HookListener::Submissions
        ]
    );
    assert!(rspamd.reuse, "connections are kept by default");
    let off =
        parse("[[milter]]\nname = \"x\"\nsocket = \"unix:/x\"\nreuse = false\n").expect("valid");
    assert!(!off.hooks.milters[0].reuse);
    let a = &h.access;
    assert_eq!(
        a.client[0].pattern,
        AccessPattern::Cidr("192.0.2.0/24".parse().expect("net"))
    );
    assert_eq!(
        a.client[1].pattern,
        AccessPattern::Cidr("198.51.100.7/32".parse().expect("net"))
    );
    assert_eq!(a.client[1].verdict, AccessVerdict::Accept);
    assert_eq!(
        a.client[2],
        AccessEntry {
            pattern: AccessPattern::Domain("dialup.example.net".into()),
            verdict: AccessVerdict::Tempfail(Some("Try later".into())),
        }
    );
    assert_eq!(
        a.client[3].pattern,
        AccessPattern::Pattern("^mx[0-9]+\\.bad\\.example$".into())
    );
    assert_eq!(a.helo[0].pattern, AccessPattern::Exact("localhost".into()));
    assert_eq!(
        a.helo[0].verdict,
        AccessVerdict::Reject(Some("You are not me".into()))
    );
    assert_eq!(
        a.sender[0].pattern,
        AccessPattern::Exact("spammer@example.com".into())
    );
    assert_eq!(
        a.sender[1].pattern,
        AccessPattern::Exact("example.org".into())
    );
    assert_eq!(
        a.sender[1].verdict,
        AccessVerdict::Hold(Some("Review".into()))
    );
    assert_eq!(a.sender[2].verdict, AccessVerdict::Discard(None));
    assert_eq!(a.recipient.len(), 1);
    // The helpers the engine uses.
    assert_eq!(
        h.policies_at(HookListener::Smtpd, HookStage::Rcpt)
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["postgrey"]
    );
    assert_eq!(h.milters_for(HookListener::Local).count(), 1);
}

#[test]
fn effective_rendering_loads_back_equal() {
    let cfg = parse(PLAN_EXAMPLE).expect("valid");
    let shown = cfg.render_effective();
    assert!(
        shown.contains("[[policy]]\nname = \"postgrey\"\n"),
        "{shown}"
    );
    assert!(shown.contains("socket = \"inet:[::1]:11332\"\n"), "{shown}");
    let again = parse(&shown).unwrap_or_else(|e| panic!("{e}\n{shown}"));
    assert_eq!(again.hooks, cfg.hooks);
    assert_eq!(again.effective, cfg.effective);
    // And with no hooks at all.
    let empty = parse("").expect("valid");
    let shown = empty.render_effective();
    assert!(shown.contains("# [[milter]]: none"), "{shown}");
    assert_eq!(parse(&shown).expect("loads").hooks, HooksConfig::default());
}

#[test]
fn access_entries_print_as_written_and_parse_back() {
    for (list, text) in [
        (AccessList::Client, "192.0.2.0/24 reject"),
        (AccessList::Client, "2001:db8::/32 tempfail Slow down"),
        (AccessList::Client, "mx.example.net accept"),
        (AccessList::Helo, "[192.0.2.1] reject Not you"),
        (AccessList::Helo, "[ipv6:2001:db8::1] hold"),
        (AccessList::Sender, "User@example.com discard Bye"),
        (AccessList::Recipient, ".example.org hold"),
        (AccessList::Recipient, "/[a-z]+ x@example\\.org/ reject"),
    ] {
        let e = AccessEntry::parse(list, text).expect(text);
        let printed = e.to_string();
        assert_eq!(AccessEntry::parse(list, &printed), Ok(e.clone()), "{text}");
    }
    // A regex may hold a slash not followed by a space, and an escaped one that is.
    let e = AccessEntry::parse(AccessList::Sender, "/a/b\\/ c/ reject").expect("regex");
    assert_eq!(e.pattern, AccessPattern::Pattern("a/b\\/ c".into()));
    // Case: the domain is lowered, the local part kept; the action word in any case.
    let e = AccessEntry::parse(AccessList::Sender, "Bob@EXAMPLE.com REJECT").expect("ok");
    assert_eq!(e.pattern, AccessPattern::Exact("Bob@example.com".into()));
}

#[test]
fn access_errors_name_the_entry_its_line_and_the_fix() {
    let text = "[access]\nsender = [\n  \"a@example.com reject\",\n  \"b@example.com reject\",\n  \"192.0.2.1 reject\",\n]\n";
    let i = one(text, "access.sender[3]");
    assert_eq!(i.line, Some(5));
    assert_eq!(i.found, "\"192.0.2.1 reject\"");
    assert!(i.expected.contains("access.client"), "{i}");
    let msg = i.to_string();
    assert!(
        msg.starts_with("/etc/sloop/test.toml:5: access.sender[3]: found \"192.0.2.1 reject\""),
        "{msg}"
    );
    for (list, entry, says) in [
        ("client", "a@example.com reject", "user@domain is for"),
        ("client", "192.0.2.0/33 reject", "CIDR"),
        ("helo", "192.0.2.0/24 reject", "access.client"),
        ("helo", "[300.1.1.1] reject", "address literal"),
        ("sender", "@example.com reject", "without @"),
        ("sender", "/(/ reject", "regular expression"),
        ("sender", "// reject", "empty"),
        ("sender", "/abc reject", "closed by a /"),
        ("sender", "example.com", "an action"),
        ("sender", "example.com frobnicate", "accept, reject"),
        ("sender", "example.com accept Fine", "without a text"),
        ("sender", "example.com reject caf\u{e9}", "printable ASCII"),
        ("sender", "example.com reject a\tb", "printable ASCII"),
        ("recipient", "bad_name!.com reject", "a pattern"),
        ("recipient", "", "PATTERN ACTION"),
        ("client", "/[a-z]{100000}/ reject", "regular expression"),
    ] {
        let text = format!("[access]\n{list} = [{:?}]\n", entry);
        let i = one(&text, &format!("access.{list}[1]"));
        assert_eq!(i.line, Some(2), "{i}");
        assert!(i.expected.contains(says), "{entry}: {i}");
        assert!(!i.to_string().contains('\n'), "{i}");
    }
    let i = one(
        "[access]\nhelo = [\"localhost reject\", 3]\n",
        "access.helo[2]",
    );
    assert!(i.expected.contains("a string"), "{i}");
    let i = one("[access]\nhelo = \"localhost reject\"\n", "access.helo");
    assert!(i.expected.contains("a list"), "{i}");
    let i = one("[access]\nclients = []\n", "access.clients");
    assert_eq!(i.found, "an unknown key");
}

#[test]
fn hook_table_errors_name_the_table_key_and_line() {
    let text = "[[policy]]\nname = \"a\"\nsocket = \"unix:/a\"\n\n[[policy]]\nname = \"b\"\nsocket = \"unix:/b\"\nstage = \"rctp\"\n";
    let i = one(text, "policy[2].stage");
    assert_eq!(i.line, Some(8));
    assert_eq!(i.found, "\"rctp\"");
    assert_eq!(i.expected, "one of: connect, helo, mail, rcpt, data, eom");
    assert_eq!(
        i.to_string(),
        "/etc/sloop/test.toml:8: policy[2].stage: found \"rctp\"; expected one of: connect, helo, mail, rcpt, data, eom"
    );

    let base = "name = \"x\"\nsocket = \"unix:/x\"\n";
    for (section, extra, key, says) in [
        ("policy", "timeout = \"5\"", "timeout", "unit"),
        ("policy", "timeout = \"1h\"", "timeout", "from 100ms to 10m"),
        ("policy", "tries = 0", "tries", "from 1 to 10"),
        ("policy", "tries = \"2\"", "tries", "whole number"),
        (
            "policy",
            "on_error = \"ignore\"",
            "on_error",
            "accept, tempfail",
        ),
        (
            "policy",
            "listeners = [\"local\"]",
            "listeners",
            "no SMTP session",
        ),
        ("policy", "listeners = []", "listeners", "non-empty"),
        (
            "policy",
            "listeners = [\"smtp\"]",
            "listeners",
            "smtpd, submission",
        ),
        (
            "milter",
            "command_timeout = \"2h\"",
            "command_timeout",
            "to 1h",
        ),
        ("milter", "stage = \"rcpt\"", "stage", "keys of [[milter]]"),
        ("milter", "reuse = \"yes\"", "reuse", "true or false"),
        (
            "milter",
            "listeners = \"smtpd\"",
            "listeners",
            "non-empty list",
        ),
        ("policy", "Name = \"y\"", "Name", "keys of [[policy]]"),
    ] {
        let text = format!("[[{section}]]\n{base}{extra}\n");
        let i = one(&text, &format!("{section}[1].{key}"));
        assert_eq!(i.line, Some(4), "{i}");
        assert!(i.expected.contains(says), "{extra}: {i}");
    }
    let i = one("[[milter]]\nname = \"x\"\n", "milter[1].socket");
    assert_eq!(i.line, Some(1), "a missing key points at its table");
    assert!(i.found.contains("required"), "{i}");
    let i = one("[[policy]]\nsocket = \"unix:/x\"\n", "policy[1].name");
    assert!(i.expected.contains("postgrey"), "{i}");
    let i = one(
        "[[policy]]\nname = \"grey list\"\nsocket = \"unix:/x\"\n",
        "policy[1].name",
    );
    assert_eq!(i.line, Some(2));
    let i = one(
        "[[policy]]\nname = 3\nsocket = \"unix:/x\"\n",
        "policy[1].name",
    );
    assert_eq!((i.found.as_str(), i.expected.as_str()), ("3", "a string"));
    let long = "n".repeat(65);
    let i = one(
        &format!("[[policy]]\nname = {long:?}\nsocket = \"unix:/x\"\n"),
        "policy[1].name",
    );
    assert!(i.expected.contains("at most 64"), "{i}");
    let i = one(
        "[[milter]]\nname = \"m\"\nsocket = 25\n",
        "milter[1].socket",
    );
    assert_eq!(i.expected, "a string");
    let i = one(
        "[[milter]]\nname = \"m\"\nsocket = \"unix:/m\"\nlisteners = [\"smtpd\", 3]\n",
        "milter[1].listeners",
    );
    assert_eq!(i.found, "3");
}

#[test]
fn sockets() {
    let socket = |s: &str| {
        let text = format!("[[milter]]\nname = \"m\"\nsocket = {s:?}\n");
        parse(&text).map(|c| c.hooks.milters[0].socket.clone())
    };
    let expect_err = |s: &str, says: &str| {
        let text = format!("[[milter]]\nname = \"m\"\nsocket = {s:?}\n");
        let i = one(&text, "milter[1].socket");
        assert_eq!(i.line, Some(3));
        assert!(i.expected.contains(says), "{s}: {i}");
    };
    assert_eq!(
        socket("inet:localhost:8891").expect("name"),
        HookSocket::Inet {
            host: "localhost".into(),
            port: 8891
        }
    );
    assert_eq!(
        socket("inet:[2001:db8::1]:8891").expect("v6").to_string(),
        "inet:[2001:db8::1]:8891"
    );
    // A relative unix path is taken relative to the config file, like every path.
    assert_eq!(
        socket("unix:run/opendkim.sock").expect("relative"),
        HookSocket::Unix("/etc/sloop/run/opendkim.sock".into())
    );
    expect_err("inet:8891@localhost", "inet:localhost:8891");
    expect_err("inet:::1:8891", "brackets");
    expect_err("inet:[::1]8891", "inet:[::1]:port");
    expect_err("inet:[localhost]:8891", "IPv6 address");
    expect_err("inet:127.0.0.1", "a port");
    expect_err("inet:127.0.0.1:0", "1 to 65535");
    expect_err("inet:127.0.0.1:65536", "1 to 65535");
    expect_err("inet:bad host:25", "host name");
    expect_err("tcp:127.0.0.1:25", "unix:/path");
    expect_err("/run/opendkim.sock", "unix:/path");
    expect_err("unix:", "a path");
    expect_err(&format!("unix:/{}", "d".repeat(120)), "107 octets");
}

#[test]
fn duplicate_names_and_misshapen_sections() {
    let text = "[[milter]]\nname = \"dkim\"\nsocket = \"unix:/a\"\n[[milter]]\nname = \"clam\"\nsocket = \"unix:/b\"\n[[milter]]\nname = \"dkim\"\nsocket = \"unix:/c\"\n[[policy]]\nname = \"dkim\"\nsocket = \"unix:/d\"\n";
    let i = one(text, "milter[3].name");
    assert_eq!(i.line, Some(8));
    assert_eq!(i.found, "\"dkim\", the name of milter[1] too");
    // Tables that are invalid otherwise count too, and keep their numbers.
    let text = "[[policy]]\nname = \"p\"\nsocket = \"bad\"\n[[policy]]\nname = \"q\"\nsocket = \"unix:/a\"\n[[policy]]\nname = \"p\"\nsocket = \"unix:/b\"\n";
    let found = issues(text);
    let keys: Vec<&str> = found.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["policy[1].socket", "policy[3].name"]);
    assert_eq!(found[1].found, "\"p\", the name of policy[1] too");

    let i = one("[policy]\nname = \"p\"\n", "policy");
    assert_eq!(i.line, Some(1));
    assert_eq!(i.found, "a single [policy] table");
    assert!(i.expected.contains("[[policy]]"), "{i}");
    let i = one("policy = 3\n", "policy");
    assert_eq!(i.line, Some(1));
    let i = one("milter = [3]\n", "milter[1]");
    assert!(i.expected.contains("[[milter]]"), "{i}");
    // Inline tables are tables too.
    let cfg = parse("policy = [{ name = \"p\", socket = \"unix:/p\", stage = \"helo\" }]\n")
        .expect("inline");
    assert_eq!(cfg.hooks.policies[0].on_error, OnError::Shutdown);
}

#[test]
fn listeners_are_kept_in_order_once() {
    let cfg = parse(
        "[[milter]]\nname = \"m\"\nsocket = \"unix:/m\"\nlisteners = [\"local\", \"smtpd\", \"local\"]\n",
    )
    .expect("valid");
    assert_eq!(
        cfg.hooks.milters[0].listeners,
        [HookListener::Local, HookListener::Smtpd]
    );
}

#[test]
fn every_error_is_reported_at_once_in_file_order() {
    let text = "[access]\nsender = [\"x\"]\n[[policy]]\nname = \"p\"\nsocket = \"x\"\nstage = \"nope\"\n[[milter]]\nbogus = 1\n";
    let found = issues(text);
    let keys: Vec<&str> = found.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "access.sender[1]",
            "policy[1].socket",
            "policy[1].stage",
            "milter[1].name",
            "milter[1].socket",
            "milter[1].bogus",
        ]
    );
    let lines: Vec<Option<usize>> = found.iter().map(|i| i.line).collect();
    assert_eq!(
        lines,
        [Some(2), Some(5), Some(6), Some(7), Some(7), Some(8)]
    );
}

#[test]
fn the_sample_examples_load_when_uncommented() {
    let sample = render_sample();
    assert!(sample.contains("\n#[[policy]]\n"), "{sample}");
    assert!(sample.contains("\n#name = \"postgrey\"\n"), "{sample}");
    assert!(sample.contains("\n#[[milter]]\n"), "{sample}");
    // Uncomment the examples (`#key`, never `# doc`) and the tables load.
    let text: String = sample
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if !rest.starts_with(' ') && !rest.is_empty() => rest,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let cfg = Config::parse_with(Path::new("/etc/sloop/sloop.toml"), &text, false)
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(cfg.hooks.policies.len(), 1);
    assert_eq!(cfg.hooks.policies[0].name, "postgrey");
    assert_eq!(cfg.hooks.milters.len(), 1);
    assert_eq!(
        cfg.hooks.milters[0].socket,
        HookSocket::Unix("/run/opendkim/opendkim.sock".into())
    );
}

#[test]
fn reference_and_man_page_document_the_hook_keys() {
    let docs = render_docs();
    assert!(docs.contains("\n## [[policy]]\n"), "{docs}");
    assert!(
        docs.contains("| `policy.name` | name | required |"),
        "{docs}"
    );
    assert!(
        docs.contains("`\"shutdown\"` at connect and helo, else `\"tempfail\"`"),
        "{docs}"
    );
    assert!(docs.contains("\n## [access]\n"), "{docs}");
    let man = render_man("1");
    assert!(man.contains(".SH \"[[milter]]\""), "{man}");
}

/// The round trip of `render_effective` over many generated hook configurations (the
/// fuzz target checks the same property, but random text seldom loads with hooks).
#[test]
fn generated_hook_configs_render_and_load_back_equal() {
    let sockets = [
        "unix:/run/a.sock",
        "unix:rel/b.sock",
        "unix:/odd \"quoted\" path\\x",
        "inet:127.0.0.1:1",
        "inet:[::ffff:192.0.2.1]:65535",
        "inet:Mail.Example.COM.:25",
    ];
    let stages = ["connect", "helo", "mail", "rcpt", "data", "eom"];
    let errors = ["", "accept", "tempfail", "reject", "shutdown"];
    let durations = ["", "100ms", "1500ms", "90s", "10m"];
    let listeners = ["", "[\"submissions\", \"smtpd\"]", "[\"smtpd\", \"smtpd\"]"];
    let entries = [
        "'/(?-i)A\\/ b/ reject Text with \"quotes\"'",
        "\"198.51.100.7/24 accept\"",
        "\".Example.NET tempfail\"",
    ];
    let mut n = 0;
    for (i, socket) in sockets.iter().enumerate() {
        for (j, stage) in stages.iter().enumerate() {
            let on_error = errors[(i + j) % errors.len()];
            let duration = durations[(i * 7 + j) % durations.len()];
            let listen = listeners[(i + 2 * j) % listeners.len()];
            let entry = entries[(i + j) % entries.len()];
            let mut text = format!(
                "[[policy]]\nname = \"p{i}{j}\"\nsocket = {socket:?}\nstage = \"{stage}\"\n"
            );
            let mut milter = format!("[[milter]]\nname = \"m.{j}-{i}\"\nsocket = {socket:?}\n");
            if !on_error.is_empty() {
                text.push_str(&format!("on_error = \"{on_error}\"\n"));
                milter.push_str(&format!("on_error = \"{on_error}\"\n"));
            }
            if !duration.is_empty() {
                text.push_str(&format!("timeout = \"{duration}\"\n"));
                milter.push_str(&format!("content_timeout = \"{duration}\"\n"));
            }
            if !listen.is_empty() {
                text.push_str(&format!("listeners = {listen}\n"));
                milter.push_str(&format!("listeners = {listen}\n"));
            }
            text.push_str(&milter);
            text.push_str(&format!(
                "[access]\nclient = [{entry}]\nrecipient = [\"a@B.example hold\"]\n"
            ));
            let cfg = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            let shown = cfg.render_effective();
            let again = parse(&shown).unwrap_or_else(|e| panic!("{e}\n{shown}"));
            assert_eq!(again.hooks, cfg.hooks, "{text}");
            assert_eq!(again.effective, cfg.effective, "{text}");
            // Loaded again, it renders the same but for the marks of defaulted keys.
            assert_eq!(again.render_effective(), shown.replace("  # default", ""));
            n += 1;
        }
    }
    assert_eq!(n, sockets.len() * stages.len());
}

#[test]
fn a_table_section_written_as_an_array_says_so() {
    let i = one("[[access]]\nclient = []\n", "access");
    assert_eq!(i.line, Some(1));
    assert_eq!(i.found, "[[access]] (an array of tables)");
    assert!(i.expected.contains("single brackets"), "{i}");
    let i = one("smtpd = 3\n", "smtpd");
    assert_eq!(i.found, "3");
}
