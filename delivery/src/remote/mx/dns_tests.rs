//! MX resolution against a scripted DNS responder on loopback (never real DNS).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use hickory_resolver::proto::op::{Message, MessageType, OpCode};
use hickory_resolver::proto::rr::rdata::{A, MX};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use sloop_common::spool::status::Outcome;
use std::net::{Ipv4Addr, UdpSocket};

/// What the fake server answers for one (name, type).
fn answer(name: &str, t: RecordType) -> (ResponseCode, Vec<RData>) {
    let mx = |p: u16, h: &str| RData::MX(MX::new(p, Name::from_ascii(h).unwrap()));
    let a = |ip: [u8; 4]| RData::A(A(Ipv4Addr::from(ip)));
    match (name, t) {
        ("multi.test.", RecordType::MX) => (
            ResponseCode::NoError,
            vec![mx(20, "backup.multi.test."), mx(10, "primary.multi.test.")],
        ),
        ("primary.multi.test.", RecordType::A) => (ResponseCode::NoError, vec![a([127, 0, 0, 2])]),
        ("backup.multi.test.", RecordType::A) => (ResponseCode::NoError, vec![a([127, 0, 0, 1])]),
        ("null.test.", RecordType::MX) => (ResponseCode::NoError, vec![mx(0, ".")]),
        ("plain.test.", RecordType::A) => (ResponseCode::NoError, vec![a([127, 0, 0, 3])]),
        ("broken.test.", _) => (ResponseCode::ServFail, vec![]),
        (n, _) if n.ends_with(".test.") && !n.starts_with("gone") => {
            (ResponseCode::NoError, vec![])
        }
        _ => (ResponseCode::NXDomain, vec![]),
    }
}

/// A UDP DNS responder on 127.0.0.1 answering from [`answer`] (also used by the
/// remote agent tests).
pub(crate) fn fake_dns() -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            let Ok(req) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let Some(q) = req.queries().first().cloned() else {
                continue;
            };
            let (code, rdatas) = answer(&q.name().to_ascii(), q.query_type());
            let mut resp = Message::new();
            resp.set_id(req.id())
                .set_message_type(MessageType::Response)
                .set_op_code(OpCode::Query)
                .set_recursion_desired(req.recursion_desired())
                .set_recursion_available(true)
                .set_response_code(code)
                .add_query(q.clone());
            for rd in rdatas {
                resp.add_answer(Record::from_rdata(q.name().clone(), 60, rd));
            }
            let _ = sock.send_to(&resp.to_vec().unwrap(), peer);
        }
    });
    addr
}

fn resolve(domain: &str) -> Result<Vec<Candidate>, RcptResult> {
    let mut r = HopResolver::with_nameserver(fake_dns(), 2525);
    r.candidates(&NextHop::Mx {
        domain: domain.into(),
    })
}

#[test]
fn mx_hosts_in_preference_order_with_their_addresses() {
    let c = resolve("multi.test").unwrap();
    let relays: Vec<String> = c.iter().map(Candidate::relay).collect();
    assert_eq!(
        relays,
        vec![
            "primary.multi.test[127.0.0.2]:2525",
            "backup.multi.test[127.0.0.1]:2525"
        ]
    );
}

#[test]
fn no_mx_falls_back_to_the_domain_address() {
    let c = resolve("plain.test").unwrap();
    assert_eq!(c[0].relay(), "plain.test[127.0.0.3]:2525");
}

#[test]
fn null_mx_and_missing_domains_fail_lookup_errors_defer() {
    let r = resolve("null.test").unwrap_err();
    assert_eq!((r.outcome, r.dsn.as_str()), (Outcome::Fail, "5.1.10"));
    let r = resolve("gone.example").unwrap_err();
    assert_eq!((r.outcome, r.dsn.as_str()), (Outcome::Fail, "5.1.2"));
    let r = resolve("broken.test").unwrap_err();
    assert_eq!((r.outcome, r.dsn.as_str()), (Outcome::Defer, "4.4.3"));
}

/// Regression: an MX pointing back at this host made a loop (a bounce then travelled
/// about 200 hops). This host as the best MX fails 5.4.6; as a backup MX, only the
/// better ones are tried.
#[test]
fn this_host_is_never_an_mx_target() {
    let me = |ip: [u8; 4]| ThisHost {
        names: vec!["me.test".into()],
        addrs: vec![IpAddr::from(ip)],
        loopback: false,
    };
    let hop = NextHop::Mx {
        domain: "multi.test".into(),
    };
    // We are primary.multi.test (127.0.0.2), the best MX: a loop.
    let mut r = HopResolver::with_nameserver(fake_dns(), 2525).refusing(me([127, 0, 0, 2]));
    let e = r.candidates(&hop).unwrap_err();
    assert_eq!(
        (e.outcome, e.dsn.as_str()),
        (Outcome::Fail, "5.4.6"),
        "{e:?}"
    );
    assert!(e.text.contains("loops back to myself"), "{e:?}");
    // We are the backup (127.0.0.1): only the primary is tried.
    let mut r = HopResolver::with_nameserver(fake_dns(), 2525).refusing(me([127, 0, 0, 1]));
    let relays: Vec<String> = r
        .candidates(&hop)
        .unwrap()
        .iter()
        .map(Candidate::relay)
        .collect();
    assert_eq!(relays, vec!["primary.multi.test[127.0.0.2]:2525"]);
    // Loopback is this host in production: an MX on 127.0.0.3 is a loop.
    let lo = ThisHost {
        loopback: true,
        ..ThisHost::default()
    };
    let mut r = HopResolver::with_nameserver(fake_dns(), 2525).refusing(lo);
    let e = r
        .candidates(&NextHop::Mx {
            domain: "plain.test".into(),
        })
        .unwrap_err();
    assert_eq!(e.dsn, "5.4.6", "{e:?}");
}
