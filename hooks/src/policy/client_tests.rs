//! The policy client against in-process fake services on a unix socket in a temp
//! directory and on 127.0.0.1 (an ephemeral port). Each fake connection follows a
//! script; the service records what it saw so that tests count connections and
//! requests instead of timing them.

use super::*;
use crate::policy::{encode_reply, ProtocolState, Request};
use sloop_common::config::hooks::{HookListener, HookStage, OnError};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What a fake connection does, step by step.
#[derive(Clone)]
enum Step {
    /// Read a request, write these bytes.
    Reply(Vec<u8>),
    /// Wait until the test calls `Fake::go`, then write these bytes without waiting
    /// for a request.
    SendOnGo(Vec<u8>),
    /// Read a request, write each of these in a `write(2)` of its own (on TCP with
    /// Nagle's algorithm on, as a server that does not set TCP_NODELAY).
    Pieces(Vec<Vec<u8>>),
    /// Read a request, then close.
    ReadThenClose,
    /// Close now.
    Close,
    /// Read a request, never answer; end when the client closes.
    Silent,
}

fn reply(a: &Action) -> Step {
    Step::Reply(encode_reply(a))
}

#[derive(Default)]
struct Seen {
    conns: usize,
    requests: Vec<String>,
    closed: usize,
    sent: usize,
    go: bool,
}

struct Fake {
    socket: HookSocket,
    seen: Arc<Mutex<Seen>>,
    _dir: Option<TempDir>,
}

impl Fake {
    fn conns(&self) -> usize {
        self.seen.lock().unwrap().conns
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().requests.clone()
    }

    fn go(&self) {
        self.seen.lock().unwrap().go = true;
    }

    fn wait_for(&self, what: &str, cond: impl Fn(&Seen) -> bool) {
        let end = Instant::now() + Duration::from_secs(10);
        while !cond(&self.seen.lock().unwrap()) {
            assert!(Instant::now() < end, "fake service: no {what} within 10 s");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let p =
            std::env::temp_dir().join(format!("sloop-policy-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

type Script = Arc<dyn Fn(usize) -> Vec<Step> + Send + Sync>;

fn run_conn<S: io::Read + io::Write>(stream: S, steps: Vec<Step>, seen: &Mutex<Seen>) {
    let mut r = BufReader::new(stream);
    let read_request = |r: &mut BufReader<S>| -> bool {
        let mut req = String::new();
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
            req.push_str(&line);
            if line == "\n" {
                seen.lock().unwrap().requests.push(req);
                return true;
            }
        }
    };
    for step in steps {
        match step {
            Step::Reply(bytes) => {
                if !read_request(&mut r) || r.get_mut().write_all(&bytes).is_err() {
                    break;
                }
            }
            Step::SendOnGo(bytes) => {
                while !seen.lock().unwrap().go {
                    std::thread::sleep(Duration::from_millis(5));
                }
                let _ = r.get_mut().write_all(&bytes);
                seen.lock().unwrap().sent += 1;
            }
            Step::Pieces(pieces) => {
                if !read_request(&mut r) {
                    break;
                }
                for piece in pieces {
                    if r.get_mut().write_all(&piece).is_err() {
                        break;
                    }
                }
            }
            Step::ReadThenClose => {
                read_request(&mut r);
                break;
            }
            Step::Close => break,
            Step::Silent => {
                if read_request(&mut r) {
                    let mut rest = Vec::new();
                    let _ = io::Read::read_to_end(&mut r, &mut rest);
                }
                break;
            }
        }
    }
    drop(r);
    seen.lock().unwrap().closed += 1;
}

fn accept_loop<S, L>(listener: L, script: Script, seen: Arc<Mutex<Seen>>)
where
    S: io::Read + io::Write + Send + 'static,
    L: FnMut() -> io::Result<S> + Send + 'static,
{
    let mut listener = listener;
    std::thread::spawn(move || {
        while let Ok(stream) = listener() {
            let n = {
                let mut s = seen.lock().unwrap();
                s.conns += 1;
                s.conns - 1
            };
            let steps = script(n);
            let seen = Arc::clone(&seen);
            std::thread::spawn(move || run_conn(stream, steps, &seen));
        }
    });
}

fn fake_unix(script: impl Fn(usize) -> Vec<Step> + Send + Sync + 'static) -> Fake {
    let dir = TempDir::new("unix");
    let path = dir.0.join("policy.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    accept_loop(
        move || listener.accept().map(|(s, _)| s),
        Arc::new(script),
        Arc::clone(&seen),
    );
    Fake {
        socket: HookSocket::Unix(path),
        seen,
        _dir: Some(dir),
    }
}

fn fake_tcp(script: impl Fn(usize) -> Vec<Step> + Send + Sync + 'static) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    accept_loop(
        move || listener.accept().map(|(s, _)| s),
        Arc::new(script),
        Arc::clone(&seen),
    );
    Fake {
        socket: HookSocket::Inet {
            host: "127.0.0.1".into(),
            port,
        },
        seen,
        _dir: None,
    }
}

fn client(socket: &HookSocket, timeout_ms: u64, tries: u32) -> PolicyClient {
    PolicyClient::new(&PolicyHook {
        name: "test".into(),
        socket: socket.clone(),
        stage: HookStage::Rcpt,
        timeout: Duration::from_millis(timeout_ms),
        tries,
        on_error: OnError::Tempfail,
        listeners: vec![HookListener::Smtpd],
    })
}

fn request(rcpt: &str) -> Request {
    let mut r = Request::new(ProtocolState::Rcpt);
    r.set("client_address", "192.0.2.1")
        .set("sender", "a@example.org")
        .set("recipient", rcpt);
    r
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

#[test]
fn reuses_one_unix_connection_across_requests() {
    let fake = fake_unix(|_| {
        vec![
            reply(&Action::Ok),
            reply(&Action::Reject(Some("5.7.1 no".into()))),
            reply(&Action::Dunno),
        ]
    });
    let mut c = client(&fake.socket, 5000, 2);
    assert_eq!(c.query(&request("1@x"), soon()), Ok(Action::Ok));
    assert_eq!(
        c.query(&request("2@x"), soon()),
        Ok(Action::Reject(Some("5.7.1 no".into())))
    );
    assert_eq!(c.query(&request("3@x"), soon()), Ok(Action::Dunno));
    assert!(c.is_connected());
    assert_eq!(fake.conns(), 1);
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[2].as_bytes(), request("3@x").encode());
}

#[test]
fn reuses_one_tcp_connection_and_sends_the_request_as_is() {
    let fake = fake_tcp(|_| vec![reply(&Action::DeferIfPermit(Some("Greylisted".into()))); 2]);
    let mut c = client(&fake.socket, 5000, 2);
    for _ in 0..2 {
        assert_eq!(
            c.query(&request("r@x"), soon()),
            Ok(Action::DeferIfPermit(Some("Greylisted".into())))
        );
    }
    assert_eq!(fake.conns(), 1);
    assert_eq!(
        fake.requests()[0],
        "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.1\n\
         sender=a@example.org\nrecipient=r@x\n\n"
    );
}

#[test]
fn a_reply_written_in_pieces_over_tcp_is_read_whole() {
    // The client acknowledges each piece at once (TCP_QUICKACK), so the next piece,
    // held back by the server's Nagle algorithm until that ACK, follows without the
    // kernel's delayed-ACK wait; either way the reply must come out whole.
    let pieces = || {
        Step::Pieces(vec![
            b"action=".to_vec(),
            b"DEFER_IF_PERMIT Greylisted\n".to_vec(),
            b"\n".to_vec(),
        ])
    };
    let fake = fake_tcp(move |_| vec![pieces(), pieces()]);
    let mut c = client(&fake.socket, 5000, 1);
    for _ in 0..2 {
        assert_eq!(
            c.query(&request("r@x"), soon()),
            Ok(Action::DeferIfPermit(Some("Greylisted".into())))
        );
    }
    assert_eq!(fake.conns(), 1);
}

#[test]
fn service_closing_an_idle_connection_costs_no_try() {
    let fake = fake_unix(|n| match n {
        0 => vec![reply(&Action::Ok), Step::Close],
        _ => vec![reply(&Action::Dunno)],
    });
    // One try only: had the closed connection counted, the second query would fail.
    let mut c = client(&fake.socket, 5000, 1);
    assert_eq!(c.query(&request("1@x"), soon()), Ok(Action::Ok));
    fake.wait_for("close", |s| s.closed == 1);
    assert_eq!(c.query(&request("2@x"), soon()), Ok(Action::Dunno));
    assert_eq!(fake.conns(), 2);
}

#[test]
fn kept_connection_closed_on_the_next_request_is_replaced_once() {
    let fake = fake_tcp(|n| match n {
        0 => vec![reply(&Action::Ok), Step::ReadThenClose],
        _ => vec![reply(&Action::Dunno)],
    });
    let mut c = client(&fake.socket, 5000, 1);
    assert_eq!(c.query(&request("1@x"), soon()), Ok(Action::Ok));
    assert_eq!(c.query(&request("2@x"), soon()), Ok(Action::Dunno));
    assert_eq!(fake.conns(), 2);
    // The request went to the closing connection, then again to the new one.
    assert_eq!(fake.requests().len(), 3);
}

#[test]
fn a_fresh_connection_closed_without_reply_is_a_failed_try() {
    let fake = fake_unix(|_| vec![Step::ReadThenClose]);
    let mut c = client(&fake.socket, 5000, 2);
    assert_eq!(
        c.query(&request("1@x"), soon()),
        Err(PolicyError::Eof {
            try_no: 2,
            tries: 2
        })
    );
    assert_eq!(fake.conns(), 2);
}

#[test]
fn silent_service_times_out_on_every_try() {
    let fake = fake_tcp(|_| vec![Step::Silent]);
    let mut c = client(&fake.socket, 300, 2);
    let start = Instant::now();
    let err = c.query(&request("1@x"), soon()).unwrap_err();
    assert_eq!(
        err,
        PolicyError::Timeout {
            ms: 300,
            try_no: 2,
            tries: 2
        }
    );
    assert_eq!(err.to_string(), "timeout after 300ms (try 2/2)");
    assert!(
        start.elapsed() >= Duration::from_millis(600),
        "two full tries"
    );
    assert_eq!(fake.conns(), 2);
    assert!(!c.is_connected());
}

#[test]
fn the_deadline_clips_the_tries() {
    let fake = fake_unix(|_| vec![Step::Silent]);
    let mut c = client(&fake.socket, 5000, 2);
    let start = Instant::now();
    let deadline = start + Duration::from_millis(400);
    match c.query(&request("1@x"), deadline) {
        Err(PolicyError::Timeout { ms, try_no, tries }) => {
            assert!(ms <= 400, "{ms}");
            assert_eq!((try_no, tries), (1, 2), "no second try after the deadline");
        }
        other => panic!("{other:?}"),
    }
    let now = Instant::now();
    assert!(now >= deadline);
    // Loaded machines schedule late; the client itself never waits past the deadline.
    assert!(
        now < deadline + Duration::from_secs(5),
        "{:?}",
        now - deadline
    );
}

#[test]
fn a_passed_deadline_answers_at_once() {
    let fake = fake_unix(|_| vec![reply(&Action::Ok)]);
    let mut c = client(&fake.socket, 5000, 2);
    assert_eq!(
        c.query(&request("1@x"), Instant::now()),
        Err(PolicyError::Timeout {
            ms: 0,
            try_no: 1,
            tries: 2
        })
    );
    assert_eq!(fake.conns(), 0);
}

#[test]
fn garbage_is_a_protocol_error_and_not_asked_again() {
    let cases: Vec<(Vec<u8>, PolicyError)> = vec![
        (
            b"hello\n\n".to_vec(),
            PolicyError::Protocol(ProtoError::MissingAction),
        ),
        (
            b"action=O\0K\n\n".to_vec(),
            PolicyError::Protocol(ProtoError::Nul),
        ),
        (
            b"action=\xff\n\n".to_vec(),
            PolicyError::Protocol(ProtoError::NotUtf8),
        ),
        (vec![b'x'; 5000], PolicyError::Protocol(ProtoError::TooLong)),
        (
            b"action=OK\naction=OK\n\n".to_vec(),
            PolicyError::Protocol(ProtoError::DuplicateAction),
        ),
        (
            b"action=FROBNICATE\n\n".to_vec(),
            PolicyError::UnknownAction("FROBNICATE".into()),
        ),
    ];
    for (bytes, want) in cases {
        let answer = bytes.clone();
        let fake = fake_tcp(move |_| vec![Step::Reply(answer.clone())]);
        let mut c = client(&fake.socket, 5000, 2);
        let err = c.query(&request("1@x"), soon()).unwrap_err();
        assert_eq!(err, want, "{:?}", String::from_utf8_lossy(&bytes));
        assert!(!c.is_connected());
        assert_eq!(fake.conns(), 1, "a wrong answer is not asked again");
    }
    assert_eq!(
        PolicyError::UnknownAction("FROBNICATE".into()).to_string(),
        "unknown action \"FROBNICATE\""
    );
    assert_eq!(
        PolicyError::Protocol(ProtoError::Nul).to_string(),
        "protocol error: NUL in the reply"
    );
}

#[test]
fn eof_mid_reply_is_tried_again() {
    let fake = fake_unix(|n| match n {
        0 => vec![Step::Reply(b"action=DU".to_vec()), Step::Close],
        _ => vec![reply(&Action::Dunno)],
    });
    let mut c = client(&fake.socket, 5000, 2);
    assert_eq!(c.query(&request("1@x"), soon()), Ok(Action::Dunno));
    assert_eq!(fake.conns(), 2);

    let fake = fake_tcp(|_| vec![Step::Reply(b"action=DU".to_vec()), Step::Close]);
    let mut c = client(&fake.socket, 5000, 2);
    let err = c.query(&request("1@x"), soon()).unwrap_err();
    assert_eq!(err.to_string(), "unexpected EOF (try 2/2)");
    assert_eq!(fake.conns(), 2);
}

#[test]
fn connection_refused_names_the_socket() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let socket = HookSocket::Inet {
        host: "127.0.0.1".into(),
        port,
    };
    let mut c = client(&socket, 5000, 2);
    let err = c.query(&request("1@x"), soon()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("connect inet:127.0.0.1:{port}: Connection refused")
    );
}

#[test]
fn missing_unix_socket_names_the_path() {
    let dir = TempDir::new("missing");
    let path = dir.0.join("missing.sock");
    let mut c = client(&HookSocket::Unix(path.clone()), 5000, 1);
    let err = c.query(&request("1@x"), soon()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("connect unix:{}: No such file or directory", path.display())
    );
}

#[test]
fn idle_or_old_connections_are_not_reused() {
    let fake = fake_unix(|_| vec![reply(&Action::Ok); 2]);
    let mut c = client(&fake.socket, 5000, 2);
    c.max_idle = Duration::ZERO;
    c.query(&request("1@x"), soon()).unwrap();
    std::thread::sleep(Duration::from_millis(2));
    c.query(&request("2@x"), soon()).unwrap();
    assert_eq!(fake.conns(), 2);

    let fake = fake_unix(|_| vec![reply(&Action::Ok); 2]);
    let mut c = client(&fake.socket, 5000, 2);
    c.max_age = Duration::ZERO;
    c.query(&request("1@x"), soon()).unwrap();
    std::thread::sleep(Duration::from_millis(2));
    c.query(&request("2@x"), soon()).unwrap();
    assert_eq!(fake.conns(), 2);
}

#[test]
fn unasked_data_drops_the_kept_connection() {
    let fake = fake_tcp(|n| match n {
        0 => vec![
            reply(&Action::Ok),
            Step::SendOnGo(b"action=REJECT\n\n".to_vec()),
            Step::Silent,
        ],
        _ => vec![reply(&Action::Dunno)],
    });
    let mut c = client(&fake.socket, 5000, 1);
    assert_eq!(c.query(&request("1@x"), soon()), Ok(Action::Ok));
    fake.go();
    // Once the fake's write returned, the octets are in the client's socket (loopback).
    fake.wait_for("unasked reply", |s| s.sent == 1);
    assert_eq!(c.query(&request("2@x"), soon()), Ok(Action::Dunno));
    assert_eq!(fake.conns(), 2);
}

#[test]
fn inet6_loopback_by_bracketed_address() {
    let listener = match TcpListener::bind("[::1]:0") {
        Ok(l) => l,
        Err(e) => {
            println!("SKIP: inet6_loopback_by_bracketed_address: no ::1 ({e})");
            return;
        }
    };
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    accept_loop(
        move || listener.accept().map(|(s, _)| s),
        Arc::new(|_| vec![reply(&Action::Hold(Some("look".into())))]),
        Arc::clone(&seen),
    );
    let socket = HookSocket::Inet {
        host: "::1".into(),
        port,
    };
    assert_eq!(socket.to_string(), format!("inet:[::1]:{port}"));
    let mut c = client(&socket, 5000, 1);
    assert_eq!(
        c.query(&request("1@x"), soon()),
        Ok(Action::Hold(Some("look".into())))
    );
}

#[test]
fn full_unix_listen_queue_times_out_the_connect() {
    use nix::sys::socket::{bind, listen, Backlog};
    let dir = TempDir::new("backlog");
    let path = dir.0.join("full.sock");
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(fd.as_raw_fd(), &UnixAddr::new(&path).unwrap()).unwrap();
    listen(&fd, Backlog::new(0).unwrap()).unwrap();
    // Never accepted: fill the queue until a connect can only wait.
    let mut queued = Vec::new();
    let full =
        (0..64).any(
            |_| match connect_unix(&path, Instant::now() + Duration::from_millis(50)) {
                Ok(s) => {
                    queued.push(s);
                    false
                }
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(Errno::ETIMEDOUT as i32), "{e}");
                    true
                }
            },
        );
    assert!(full, "listen queue never filled");
    let mut c = client(&HookSocket::Unix(path.clone()), 200, 1);
    let start = Instant::now();
    let err = c.query(&request("1@x"), soon()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("connect unix:{}: Connection timed out", path.display())
    );
    assert!(start.elapsed() >= Duration::from_millis(200));
    drop(fd);
}
