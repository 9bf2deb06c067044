use super::params::Kind;
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

#[test]
fn empty_file_takes_every_default() {
    let cfg = parse("").expect("empty config is valid");
    let scalar = PARAMS
        .iter()
        .filter(|p| !params::is_array_key(p.key))
        .count();
    assert_eq!(
        cfg.smtpd.greeting,
        format!("{} ESMTP Sloop", machine_hostname())
    );
    assert_eq!(cfg.smtpd.max_message_size, 25 * 1024 * 1024);
    assert_eq!(cfg.queue.retry_min, Duration::from_secs(300));
    assert_eq!(cfg.defaulted.len(), scalar);
    assert_eq!(cfg.hooks, HooksConfig::default());
    assert_eq!(
        cfg.effective.len(),
        scalar,
        "every declared key is read by Config::parse"
    );
}

#[test]
fn every_default_parses() {
    for p in PARAMS {
        let (section, key) = p.key.split_once('.').expect("dotted key");
        if params::is_array_section(section) {
            if [params::REQUIRED, params::DEFAULT_BY_STAGE].contains(&p.default) {
                continue;
            }
            let text = format!(
                "[[{section}]]\nname = \"a\"\nsocket = \"unix:/s\"\n{key} = {}\n",
                p.default
            );
            if let Err(e) = parse(&text) {
                panic!("default of {} does not validate: {e}", p.key);
            }
            continue;
        }
        let text = format!(
            "[{section}]\n{key} = {}\n",
            p.default.replace("@hostname", "example.com")
        );
        if let Err(e) = parse(&text) {
            panic!("default of {} does not validate: {e}", p.key);
        }
    }
}

#[test]
fn greeting_is_rendered_once_with_hostname() {
    let cfg = parse(
        "[server]\nhostname = \"mx.example.com\"\n[smtpd]\ngreeting = \"{hostname} hello\"\n",
    )
    .expect("valid");
    assert_eq!(cfg.smtpd.greeting, "mx.example.com hello");
}

#[test]
fn all_six_errors_reported_at_once() {
    let text = "[smtpd]\nlisten = [\"127.0.0.1:99999\"]\ngreeting = \"hi\\r\\nthere\"\nmax_message_size = \"25X\"\nbogus = 1\n[relay]\nnetworks = [\"10.0.0.0/33\"]\n[local]\naliases = \"/nonexistent/aliases\"\n";
    let found = issues(text);
    let keys: Vec<&str> = found.iter().map(|i| i.key.as_str()).collect();
    for k in [
        "smtpd.listen",
        "smtpd.greeting",
        "smtpd.max_message_size",
        "smtpd.bogus",
        "relay.networks",
        "local.aliases",
    ] {
        assert!(keys.contains(&k), "missing {k} in {keys:?}");
    }
    assert_eq!(found.len(), 6, "{found:?}");
    let greeting = found
        .iter()
        .find(|i| i.key == "smtpd.greeting")
        .expect("greeting");
    assert_eq!(
        greeting.found, "\"hi\\r\\nthere\"",
        "shown on one line with escapes"
    );
    let bogus = found
        .iter()
        .find(|i| i.key == "smtpd.bogus")
        .expect("bogus");
    assert_eq!(bogus.line, Some(5));
    let msg = ConfigError::Invalid(found).to_string();
    assert!(
        msg.contains("/etc/sloop/test.toml:4: smtpd.max_message_size: found \"25X\""),
        "{msg}"
    );
}

#[test]
fn syntax_error_names_line() {
    let found = issues("[smtpd]\nmax_recipients = = 3\n");
    assert_eq!(found[0].line, Some(2));
}

#[test]
fn unknown_section_and_type_errors() {
    let found = issues("[smtp]\nx = 1\n[queue]\nretry_min = 5\n");
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].key, "smtp");
}

/// Fuzzing (fuzz target `config`) found `[""]` reported with an empty key, printed as
/// `file:1: : found an unknown key`. Names that are not bare keys are now quoted.
#[test]
fn unknown_empty_or_odd_key_is_named_quoted() {
    let found = issues("[\"\"]\n");
    assert_eq!(found[0].key, "\"\"");
    assert_eq!(found[0].line, Some(1));
    let found = issues("[server]\n\"\" = 1\n\"a\\nb\" = 2\n");
    let keys: Vec<&str> = found.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["server.\"\"", "server.\"a\\nb\""]);
    assert!(found.iter().all(|i| !i.to_string().contains('\n')));
}

#[test]
fn cross_key_rules() {
    let found = issues("[queue]\nretry_min = \"2h\"\nretry_max = \"1h\"\n");
    assert_eq!(found[0].key, "queue.retry_min");
    let found = issues("[domains]\nlocal = [\"a.test\"]\n[local]\nmailboxes = [\"x@b.test\"]\n");
    assert_eq!(found[0].key, "local.mailboxes");
}

#[test]
fn relative_paths_follow_the_file() {
    let cfg = Config::parse(
        Path::new("/srv/sloop/etc/dev.toml"),
        "[server]\nspool_dir = \"../run/spool\"\n",
    )
    .expect("valid");
    assert_eq!(
        cfg.server.spool_dir,
        PathBuf::from("/srv/sloop/etc/../run/spool")
    );
}

#[test]
fn sample_renders_valid_config() {
    // The packaged file names /etc/aliases, which the package creates; whether it exists
    // on the machine running the tests is not the sample's business.
    let cfg = Config::parse_with(Path::new("/etc/sloop/sloop.toml"), &render_sample(), false)
        .expect("sample validates");
    assert_eq!(cfg.server.spool_dir, PathBuf::from("/var/spool/sloop"));
    assert_eq!(
        cfg.defaulted.len(),
        1,
        "every key but hostname is present: {:?}",
        cfg.defaulted
    );
}

#[test]
fn inherited_config_tolerates_missing_files_and_tables_are_checked_separately() {
    let dir = std::env::temp_dir().join(format!("sloop-cfg-tables-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let aliases = dir.join("aliases");
    std::fs::write(&aliases, "postmaster: root\nbroken line\n").expect("write");
    let text = format!("[local]\naliases = {:?}\n", aliases.display().to_string());
    let cfg = parse(&text).expect("the config itself is valid");
    let Err(ConfigError::Invalid(found)) = cfg.check_tables() else {
        panic!("aliases error expected")
    };
    assert_eq!(
        (found[0].key.as_str(), found[0].line),
        ("local.aliases", Some(2))
    );
    std::fs::remove_file(&aliases).expect("rm");
    assert!(
        parse(&text).is_err(),
        "a missing aliases file is an error at check time"
    );
    let inherited = Config::parse_with(Path::new("/etc/sloop/test.toml"), &text, false);
    assert!(
        inherited.is_ok(),
        "but not for a child starting on its parent's validated text"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hostname_token_in_local_domains_and_log_keys() {
    let text = "[server]\nhostname = \"mx.example.test\"\n[domains]\nlocal = [\"@hostname\", \"Other.test\"]\n[local]\nsystem_users = true\n[log]\ntarget = \"syslog\"\nfacility = \"local3\"\n";
    let cfg = parse(text).expect("valid");
    assert_eq!(cfg.local_domains, vec!["mx.example.test", "other.test"]);
    assert!(cfg.is_local_domain("MX.example.test"));
    assert!(cfg.local.system_users);
    assert_eq!(cfg.local.system_mailbox, MailboxFormat::Mbox);
    assert_eq!(cfg.local.mail_spool_dir, Path::new("/var/mail"));
    assert_eq!(cfg.log.target, LogTarget::Syslog);
    assert_eq!(cfg.log.facility, Facility::Local3);
    assert_eq!(cfg.log.syslog_socket, Path::new("/dev/log"));
    let bad = parse("[log]\ntarget = \"journal\"\n").expect_err("bad target");
    assert!(bad.to_string().contains("log.target"), "{bad}");
    assert!(parse("[domains]\nlocal = [\"@host\"]\n").is_err());
}

/// The config with what is not a setting (the text, the effective-value bookkeeping)
/// left out, for comparing what two loads made of their files.
fn settings(cfg: &Config) -> String {
    let mut cfg = cfg.clone();
    cfg.effective = BTreeMap::new();
    cfg.defaulted = Vec::new();
    cfg.text = String::new();
    format!("{cfg:?}")
}

/// A valid value of `p` other than its default, in TOML syntax.
fn other_value(p: &params::Param) -> String {
    let default = reader::default_value(p);
    match p.kind {
        Kind::Hostname => "\"mx.example.test\"".into(),
        Kind::Text { max } if max < 5 => "\"-\"".into(),
        Kind::Text { .. } => "\"hello\"".into(),
        Kind::Path { .. } => "\"/nonexistent/sloop-test\"".into(),
        Kind::User => "\"nobody\"".into(),
        Kind::Bool => (!default.as_bool().expect("bool default")).to_string(),
        Kind::Int { min, max } => {
            let d = default.as_integer().expect("int default") as u64;
            (if d < max { d + 1 } else { min }).to_string()
        }
        Kind::Size { .. } => "\"2G\"".into(),
        Kind::Duration { max, .. } => {
            let d = values::parse_duration(default.as_str().expect("duration default"))
                .expect("duration default parses")
                .as_millis() as u64;
            let ms = if d + 1000 <= max { d + 1000 } else { d - 1 };
            format!("\"{ms}ms\"")
        }
        Kind::Choice(words) => {
            let other = words
                .iter()
                .find(|w| Some(**w) != default.as_str())
                .expect("a second word");
            format!("\"{other}\"")
        }
        Kind::ListenList => "[\"127.0.0.1:2525\"]".into(),
        Kind::CidrList => "[\"10.0.0.0/8\"]".into(),
        Kind::DomainList => "[\"example.test\"]".into(),
        Kind::MailboxList => "[\"a@example.test\"]".into(),
        Kind::AccessList => "[\"10.0.0.0/8 reject\"]".into(),
        Kind::HostPort => "\"relay.example.test:25\"".into(),
        Kind::RouteTable => "{ \"example.test\" = \"relay.example.test:25\" }".into(),
        Kind::LogLevel => "\"debug\"".into(),
        Kind::SendersTable => "{ alice = [\"alice@example.test\"] }".into(),
        Kind::TlsPolicyTable => "{ \"example.test\" = \"verify\" }".into(),
        Kind::AccessRules => "[\".example.test reject\"]".into(),
        Kind::HookName => "\"b\"".into(),
        Kind::LogName => "\"postfix\"".into(),
        Kind::HookSocket => "\"inet:127.0.0.1:10023\"".into(),
        Kind::HookListeners { .. } => "[\"submission\"]".into(),
    }
}

/// Keys a non-default value of `key` needs beside it to be valid (cross-key rules).
fn companions(key: &str) -> Vec<(&'static str, &'static str)> {
    let tls = [
        ("tls.cert_file", "\"/x/cert.pem\""),
        ("tls.key_file", "\"/x/key.pem\""),
    ];
    let auth = [
        ("auth.backend", "\"file\""),
        ("auth.password_file", "\"/x/passwd\""),
        ("auth.dovecot_socket", "\"/x/auth-client\""),
    ];
    let all: Vec<(&str, &str)> = match key {
        "submission.listen" | "submissions.listen" => tls.iter().chain(&auth).copied().collect(),
        "tls.cert_file" | "tls.key_file" => tls.to_vec(),
        "tls.ecdsa_cert_file" | "tls.ecdsa_key_file" => vec![
            ("tls.ecdsa_cert_file", "\"/x/ecdsa.pem\""),
            ("tls.ecdsa_key_file", "\"/x/ecdsa.key\""),
        ],
        "auth.backend" | "auth.offer_on_smtpd" => auth.to_vec(),
        "local.mailboxes" => vec![("domains.local", "[\"example.test\"]")],
        _ => Vec::new(),
    };
    all.into_iter().filter(|(k, _)| *k != key).collect()
}

/// Files named by the test values need not exist (as for an inherited config).
fn parse_unchecked(text: &str) -> Result<Config, ConfigError> {
    Config::parse_with(Path::new("/etc/sloop/test.toml"), text, false)
}

#[test]
fn every_key_is_read_into_the_config_and_round_trips() {
    let blank = parse_unchecked("").expect("empty config");
    for p in PARAMS {
        let value = other_value(p);
        let (section, key) = p.key.split_once('.').expect("dotted");
        // The key set to `value`, with what it needs beside it, and the same without it.
        let (text, without) = if params::is_array_section(section) {
            let mut table = format!("[[{section}]]\n");
            for (k, v) in [("name", "\"a\""), ("socket", "\"unix:/s\"")] {
                if k != key {
                    table.push_str(&format!("{k} = {v}\n"));
                }
            }
            (format!("{table}{key} = {value}\n"), table)
        } else {
            let others: String = companions(p.key)
                .iter()
                .map(|(k, v)| format!("{k} = {v}\n"))
                .collect();
            (format!("{} = {value}\n{others}", p.key), others)
        };
        let cfg = parse_unchecked(&text)
            .unwrap_or_else(|e| panic!("{}: {value} does not load: {e}", p.key));
        // The companions alone, when they are valid alone.
        let baseline = parse_unchecked(&without).unwrap_or_else(|_| blank.clone());
        assert_ne!(
            settings(&cfg),
            settings(&baseline),
            "{} = {value} changes nothing in the Config",
            p.key
        );
        if !params::is_array_section(section) {
            let written: toml::Table = format!("v = {value}").parse().expect("toml");
            assert_eq!(
                cfg.effective.get(p.key),
                written.get("v").map(|v| v.to_string()).as_ref(),
                "{} shown as effective",
                p.key
            );
            assert!(!cfg.defaulted.contains(&p.key), "{} marked default", p.key);
        }
        let shown = cfg.render_effective();
        let again = parse_unchecked(&shown)
            .unwrap_or_else(|e| panic!("{}: the effective config does not load: {e}", p.key));
        assert_eq!(settings(&again), settings(&cfg), "{} round trip", p.key);
        assert_eq!(again.effective, cfg.effective, "{} round trip", p.key);
    }
}

#[test]
fn each_key_fills_the_config_or_the_hook_of_its_table() {
    for p in PARAMS {
        let section = p.key.split('.').next().unwrap_or_default();
        let fills = match p.fill {
            Fill::Field(_) => !params::is_array_section(section),
            Fill::Policy { .. } => section == "policy",
            Fill::Milter { .. } => section == "milter",
        };
        assert!(fills, "{} fills {:?}", p.key, p.fill);
    }
}

#[test]
fn a_key_read_as_another_kind_is_an_internal_error_not_a_value() {
    let find = |k: &str| params::find(k).expect("declared");
    let mut r = reader::Reader::new(Path::new("/etc/sloop/test.toml"), "", true).expect("reader");
    let n: u64 = r.int(find("smtpd.reverse_dns"));
    assert_eq!(n, 0);
    // The words of local.mailbox_format are not those of BareNewline.
    let _: BareNewline = r.choice(find("local.mailbox_format"));
    assert!(!r.boolean(find("smtpd.max_errors")));
    let Err(ConfigError::Invalid(found)) = r.finish() else {
        panic!("mismatches must be reported");
    };
    let keys: Vec<&str> = found.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "smtpd.reverse_dns",
            "local.mailbox_format",
            "smtpd.max_errors"
        ]
    );
    for i in &found {
        assert!(i.found.starts_with("an internal error"), "{i}");
        assert!(i.expected.contains("Sloop bug"), "{i}");
    }
    assert!(
        found[0]
            .found
            .contains("declared as boolean but read as a whole number"),
        "{}",
        found[0]
    );
}

#[test]
fn every_word_of_every_choice_key_loads_and_reads_back() {
    for p in PARAMS {
        let Kind::Choice(words) = p.kind else {
            continue;
        };
        for w in words {
            let (section, key) = p.key.split_once('.').expect("dotted");
            let text = if params::is_array_section(section) {
                format!("[[{section}]]\nname = \"a\"\nsocket = \"unix:/s\"\n{key} = \"{w}\"\n")
            } else {
                let others: String = companions(p.key)
                    .iter()
                    .map(|(k, v)| format!("{k} = {v}\n"))
                    .collect();
                format!("{} = \"{w}\"\n{others}", p.key)
            };
            let cfg = parse_unchecked(&text).unwrap_or_else(|e| panic!("{}: {e}", p.key));
            let shown = cfg.render_effective();
            assert!(
                shown.contains(&format!("{key} = \"{w}\"")),
                "{} = {w} not shown:\n{shown}",
                p.key
            );
            let again = parse_unchecked(&shown).expect("effective config loads");
            assert_eq!(settings(&again), settings(&cfg), "{} = {w}", p.key);
        }
        let bad = format!("{} = \"No-Such-Word\"\n", p.key);
        if !params::is_array_key(p.key) {
            let found = issues(&bad);
            assert_eq!(found[0].key, p.key);
            assert_eq!(found[0].expected, format!("one of: {}", words.join(", ")));
        }
    }
}

#[test]
fn choice_keys_read_into_their_enums() {
    let cfg = parse(
        "[smtpd]\nbare_newline = \"normalize\"\n[local]\nmailbox_format = \"mbox\"\n\
         system_mailbox = \"maildir\"\n[remote]\ntls = \"verify\"\n\
         tls_policy = { \"a.test\" = \"none\" }\n[log]\nfacility = \"daemon\"\n",
    )
    .expect("valid");
    assert_eq!(cfg.smtpd.bare_newline, BareNewline::Normalize);
    assert_eq!(cfg.local.mailbox_format, MailboxFormat::Mbox);
    assert_eq!(cfg.local.system_mailbox, MailboxFormat::Maildir);
    assert_eq!(cfg.remote_tls.level, TlsLevel::Verify);
    assert_eq!(cfg.remote_tls.level_for("A.test."), TlsLevel::None);
    assert_eq!(cfg.log.facility, Facility::Daemon);
    let defaults = parse("").expect("valid");
    assert_eq!(defaults.smtpd.bare_newline, BareNewline::Reject);
    assert_eq!(defaults.local.mailbox_format, MailboxFormat::Maildir);
    assert_eq!(defaults.local.system_mailbox, MailboxFormat::Mbox);
    assert_eq!(defaults.remote_tls.level, TlsLevel::May);
    assert_eq!(defaults.auth.backend, AuthBackend::None);
    assert_eq!(defaults.log.target, LogTarget::Stderr);
    assert_eq!(defaults.log.facility.code(), 2);
}

#[test]
fn a_syslog_name_that_would_break_the_log_tag_is_refused() {
    let cfg = parse("[log]\nsyslog_name = \"postfix\"\n").expect("a plain name is valid");
    assert_eq!(cfg.log.syslog_name, "postfix");
    assert_eq!(parse("").expect("defaults").log.syslog_name, "sloop");
    for bad in ["a/b", "x y", "", "p[1]", &"n".repeat(65)] {
        let found = issues(&format!("[log]\nsyslog_name = {bad:?}\n"));
        assert!(
            found.iter().any(|i| i.key == "log.syslog_name"),
            "{bad:?}: {found:?}"
        );
    }
}
