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
    assert_eq!(cfg.log.facility, 19);
    assert_eq!(cfg.log.syslog_socket, Path::new("/dev/log"));
    let bad = parse("[log]\ntarget = \"journal\"\n").expect_err("bad target");
    assert!(bad.to_string().contains("log.target"), "{bad}");
    assert!(parse("[domains]\nlocal = [\"@host\"]\n").is_err());
}
