use super::*;
use sloop_common::config::AccessList;

/// Compiled tables from `PATTERN ACTION [TEXT]` entries, as the config would give them.
fn tables(client: &[&str], helo: &[&str], sender: &[&str], recipient: &[&str]) -> AccessTables {
    let list = |l: AccessList, items: &[&str]| -> Vec<AccessEntry> {
        items
            .iter()
            .map(|s| AccessEntry::parse(l, s).unwrap_or_else(|e| panic!("{s}: {e}")))
            .collect()
    };
    let rules = AccessRules {
        client: list(AccessList::Client, client),
        helo: list(AccessList::Helo, helo),
        sender: list(AccessList::Sender, sender),
        recipient: list(AccessList::Recipient, recipient),
    };
    AccessTables::new(&rules).expect("compiles")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn reject(text: &str) -> AccessVerdict {
    AccessVerdict::Reject(Some(text.to_string()))
}

#[test]
fn client_rules_on_address_and_name_first_match_wins() {
    let t = tables(
        &[
            "198.51.100.7 accept",
            "198.51.100.0/24 reject Net",
            "2001:db8::/32 tempfail V6",
            "mx1.example.net hold Named",
            ".dialup.example.net tempfail Dialup",
            "/^mx[0-9]+\\.bad\\.example$/ reject Pattern",
            "/203\\.0\\.113\\.[0-9]+/ discard",
        ],
        &[],
        &[],
        &[],
    );
    // Order decides: the exact host before its network.
    assert_eq!(
        t.client(ip("198.51.100.7"), None),
        Some(&AccessVerdict::Accept)
    );
    assert_eq!(t.client(ip("198.51.100.8"), None), Some(&reject("Net")));
    assert_eq!(
        t.client(ip("2001:db8::25"), None),
        Some(&AccessVerdict::Tempfail(Some("V6".into())))
    );
    // An IPv4 client on an IPv6 socket is the IPv4 client.
    assert_eq!(
        t.client(ip("::ffff:198.51.100.9"), None),
        Some(&reject("Net"))
    );
    // Names: exact without case and trailing dot, .domain for the domain and below.
    let named = |n| t.client(ip("192.0.2.1"), Some(n));
    assert_eq!(
        named("MX1.Example.NET."),
        Some(&AccessVerdict::Hold(Some("Named".into())))
    );
    assert_eq!(named("mx2.example.net"), None);
    let dialup = Some(AccessVerdict::Tempfail(Some("Dialup".into())));
    assert_eq!(named("dialup.example.net").cloned(), dialup);
    assert_eq!(named("a.b.dialup.example.net").cloned(), dialup);
    assert_eq!(named("xdialup.example.net"), None, "a label boundary");
    assert_eq!(named("mx17.bad.example"), Some(&reject("Pattern")));
    assert_eq!(named("mx17.bad.example.org"), None, "anchored at the end");
    assert_eq!(named("amx17.bad.example"), None, "anchored at the start");
    // Without a verified name only the address rules and patterns on the address apply.
    assert_eq!(t.client(ip("192.0.2.1"), None), None);
    assert_eq!(
        t.client(ip("203.0.113.5"), None),
        Some(&AccessVerdict::Discard(None))
    );
    assert_eq!(t.client(ip("192.0.2.1"), Some("")), None);
    // `unknown` is how the smtpd names a client without a verified name: no name.
    let t = tables(&["unknown reject", "/[a-z]+/ tempfail"], &[], &[], &[]);
    assert_eq!(t.client(ip("192.0.2.1"), Some("unknown")), None);
    assert_eq!(
        t.client(ip("192.0.2.1"), Some("mail")),
        Some(&AccessVerdict::Tempfail(None))
    );
}

#[test]
fn helo_rules() {
    let t = tables(
        &[],
        &[
            "localhost reject You are not me",
            "[192.0.2.1] reject Literal",
            ".example.com tempfail",
            "/.*[0-9]+-[0-9]+-[0-9]+.*/ hold",
        ],
        &[],
        &[],
    );
    assert_eq!(t.helo("LOCALHOST"), Some(&reject("You are not me")));
    assert_eq!(t.helo("localhost."), Some(&reject("You are not me")));
    assert_eq!(t.helo("[192.0.2.1]"), Some(&reject("Literal")));
    assert_eq!(t.helo("[192.0.2.10]"), None);
    assert_eq!(t.helo("example.com"), Some(&AccessVerdict::Tempfail(None)));
    assert_eq!(
        t.helo("mail.Example.com"),
        Some(&AccessVerdict::Tempfail(None))
    );
    assert_eq!(
        t.helo("host-1-2-3.isp.test"),
        Some(&AccessVerdict::Hold(None))
    );
    assert_eq!(t.helo("mail.example.org"), None);
    assert_eq!(t.helo(""), None);
}

#[test]
fn sender_and_recipient_rules() {
    let t = tables(
        &[],
        &[],
        &[
            "spammer@example.com reject",
            "example.org hold Review",
            ".example.net discard",
            "/^$/ reject No bounces here",
            "/.*\\+promo@.*/ reject Promo",
        ],
        &["abuse@example.com accept", "example.com reject"],
    );
    // user@domain: the local part exactly, the domain without case.
    assert_eq!(
        t.sender("spammer@EXAMPLE.com"),
        Some(&AccessVerdict::Reject(None))
    );
    assert_eq!(t.sender("Spammer@example.com"), None);
    assert_eq!(t.sender("spammer@example.com.au"), None);
    // domain: that domain exactly.
    let review = Some(AccessVerdict::Hold(Some("Review".into())));
    assert_eq!(t.sender("anyone@Example.ORG").cloned(), review);
    assert_eq!(t.sender("anyone@example.org.").cloned(), review);
    assert_eq!(t.sender("anyone@sub.example.org"), None);
    // .domain: that domain and below.
    assert_eq!(
        t.sender("a@example.net"),
        Some(&AccessVerdict::Discard(None))
    );
    assert_eq!(
        t.sender("a@x.y.example.net"),
        Some(&AccessVerdict::Discard(None))
    );
    assert_eq!(t.sender("a@notexample.net"), None);
    // The null sender, and patterns on the whole address.
    assert_eq!(t.sender(""), Some(&reject("No bounces here")));
    assert_eq!(t.sender("bob+promo@shop.test"), Some(&reject("Promo")));
    // An address without a domain matches only patterns.
    assert_eq!(t.sender("postmaster"), None);
    // First match wins in the recipient list too.
    assert_eq!(
        t.recipient("abuse@example.com"),
        Some(&AccessVerdict::Accept)
    );
    assert_eq!(
        t.recipient("sales@example.com"),
        Some(&AccessVerdict::Reject(None))
    );
    // Lists are separate: a sender rule does not apply to recipients.
    assert_eq!(t.recipient("spammer@example.org"), None);
    assert_eq!(
        t.check(AccessList::Sender, Subject::Address("x@example.org"))
            .cloned(),
        review
    );
}

#[test]
fn subjects_of_another_kind_never_match() {
    let t = tables(
        &["192.0.2.0/24 reject"],
        &["mx.example.com reject"],
        &["a@example.com reject"],
        &[],
    );
    // The helo table asked about an address, the sender table about a client.
    assert_eq!(
        t.check(AccessList::Client, Subject::Helo("192.0.2.1")),
        None
    );
    assert_eq!(
        t.check(
            AccessList::Sender,
            Subject::Client {
                addr: ip("192.0.2.1"),
                name: Some("example.com")
            }
        ),
        None
    );
    assert_eq!(
        t.check(AccessList::Helo, Subject::Address("x@mx.example.com")),
        None
    );
}

#[test]
fn the_one_off_check_agrees_with_the_tables() {
    let entries: Vec<AccessEntry> = ["/.*@bad\\.test/ reject", ".good.test accept"]
        .iter()
        .map(|s| AccessEntry::parse(AccessList::Sender, s).expect("entry"))
        .collect();
    let rules = AccessRules {
        sender: entries.clone(),
        ..AccessRules::default()
    };
    let t = AccessTables::new(&rules).expect("compiles");
    for a in ["x@bad.test", "x@a.good.test", "x@other.test", ""] {
        assert_eq!(check(&entries, Subject::Address(a)), t.sender(a), "{a}");
    }
    assert!(!t.is_empty());
    assert_eq!(t.table(AccessList::Sender).len(), 2);
    assert!(AccessTables::new(&AccessRules::default())
        .expect("empty")
        .is_empty());
}

#[test]
fn a_rule_that_does_not_compile_is_named() {
    // Rules built by hand, not through the loader.
    let rules = AccessRules {
        helo: vec![
            AccessEntry {
                pattern: AccessPattern::Exact("a.test".into()),
                verdict: AccessVerdict::Accept,
            },
            AccessEntry {
                pattern: AccessPattern::Pattern("(".into()),
                verdict: AccessVerdict::Accept,
            },
        ],
        ..AccessRules::default()
    };
    let err = AccessTables::new(&rules).expect_err("bad regex");
    assert_eq!((err.list, err.index), (AccessList::Helo, 2));
    let shown = err.to_string();
    assert!(
        shown.starts_with("access.helo[2]: bad regular expression"),
        "{shown}"
    );
    assert!(!shown.contains('\n'));
    assert_eq!(check(&rules.helo[1..], Subject::Helo("(")), None);
}

/// Bounded time: a pattern that makes backtracking engines explode, on a long hostile
/// value, is answered by the linear-time engine at once. The check is on the answer
/// (a timing assertion would be a benchmark); the run time of this test is the bound.
#[test]
fn a_catastrophic_pattern_for_backtracking_is_linear_here() {
    let t = tables(&[], &["/(a+)+b/ reject"], &["/(x|x)*y/ reject"], &[]);
    let hostile = "a".repeat(100_000);
    assert_eq!(t.helo(&hostile), None);
    let hostile = format!("{}@example.com", "x".repeat(100_000));
    assert_eq!(t.sender(&hostile), None);
}

#[test]
fn regexes_ignore_case_unless_told_otherwise() {
    let t = tables(&[], &[], &["/(?-i)Bob@.*/ reject", "/ann@.*/ hold"], &[]);
    assert_eq!(
        t.sender("Bob@example.com"),
        Some(&AccessVerdict::Reject(None))
    );
    assert_eq!(t.sender("bob@example.com"), None);
    assert_eq!(
        t.sender("ANN@example.com"),
        Some(&AccessVerdict::Hold(None))
    );
}
