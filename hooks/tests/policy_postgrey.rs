//! The policy client against the real `postgrey` (Debian package `postgrey`), started
//! here on loopback (an `inet:` port, then a `unix:` socket) with a temp database and
//! a 2-second greylisting delay: the first sight of a triplet is `DEFER_IF_PERMIT`,
//! early retries too, and a retry after the delay passes (`PREPEND X-Greylist: ...`,
//! or `DUNNO`).
//!
//! When postgrey is not installed the tests print `SKIP: <test>: postgrey not
//! installed` and pass, unless `SLOOP_REQUIRE_PEERS=1` is set.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sloop_common::config::hooks::{HookListener, HookSocket, HookStage, OnError, PolicyHook};
use sloop_hooks::policy::{Action, PolicyClient, ProtocolState, Request};

const POSTGREY: &str = "/usr/sbin/postgrey";
const DELAY_SECS: u64 = 2;

#[test]
fn postgrey_inet_greylists_first_sight_then_passes_after_the_delay() {
    let Some(pg) = Postgrey::start(
        "postgrey_inet_greylists_first_sight_then_passes_after_the_delay",
        Listen::Inet,
    ) else {
        return;
    };
    greylist_then_pass(&pg, "192.0.2.10");
}

#[test]
fn postgrey_unix_greylists_first_sight_then_passes_after_the_delay() {
    let Some(pg) = Postgrey::start(
        "postgrey_unix_greylists_first_sight_then_passes_after_the_delay",
        Listen::Unix,
    ) else {
        return;
    };
    greylist_then_pass(&pg, "198.51.100.20");
}

fn greylist_then_pass(pg: &Postgrey, client_address: &str) {
    let mut client = PolicyClient::new(&PolicyHook {
        name: "postgrey".into(),
        socket: pg.socket.clone(),
        stage: HookStage::Rcpt,
        timeout: Duration::from_secs(5),
        tries: 2,
        on_error: OnError::Tempfail,
        listeners: vec![HookListener::Smtpd],
    });
    let mut req = Request::new(ProtocolState::Rcpt);
    req.set("protocol_name", "ESMTP")
        .set("helo_name", "mx.example.org")
        .set("queue_id", "")
        .set("sender", "alice@example.org")
        .set("recipient", "bob@example.com")
        .set("recipient_count", "0")
        .set("client_address", client_address)
        .set("client_name", "unknown")
        .set("reverse_client_name", "unknown")
        .set("instance", "1a2b.3c4d.1")
        .set("size", "0");
    let ask = |client: &mut PolicyClient| {
        client
            .query(&req, Instant::now() + Duration::from_secs(15))
            .unwrap_or_else(|e| panic!("postgrey query failed: {e}; postgrey log:\n{}", pg.log()))
    };

    let first_sight = Instant::now();
    match ask(&mut client) {
        Action::DeferIfPermit(Some(text)) => assert!(text.starts_with("Greylisted"), "{text}"),
        other => panic!("first sight: {other:?}"),
    }
    // Retry until postgrey lets the triplet pass; every early retry is still deferred.
    let give_up = first_sight + Duration::from_secs(DELAY_SECS + 30);
    let passed = loop {
        std::thread::sleep(Duration::from_millis(250));
        match ask(&mut client) {
            Action::DeferIfPermit(_) => assert!(Instant::now() < give_up, "never passed"),
            other => break other,
        }
    };
    // postgrey counts whole seconds: the delay may end up to a second early.
    assert!(first_sight.elapsed() >= Duration::from_secs(DELAY_SECS - 1));
    println!(
        "postgrey passed the triplet after {:?}: {passed:?}",
        first_sight.elapsed()
    );
    match passed {
        Action::Prepend(h) => assert!(h.starts_with("X-Greylist: delayed "), "{h}"),
        Action::Dunno => {}
        other => panic!("after the delay: {other:?}"),
    }
    // One connection served every query.
    assert!(client.is_connected());
}

enum Listen {
    Inet,
    Unix,
}

/// A postgrey started for one test, killed and its directory removed on drop.
struct Postgrey {
    child: Child,
    dir: PathBuf,
    socket: HookSocket,
}

impl Postgrey {
    fn start(test: &str, listen: Listen) -> Option<Postgrey> {
        if !Path::new(POSTGREY).is_file() {
            assert!(
                std::env::var("SLOOP_REQUIRE_PEERS").as_deref() != Ok("1"),
                "{test}: postgrey not installed ({POSTGREY} missing) and SLOOP_REQUIRE_PEERS=1"
            );
            println!("SKIP: {test}: postgrey not installed");
            return None;
        }
        let dir = std::env::temp_dir().join(format!(
            "sloop-{}-{}",
            &test[..test.len().min(20)],
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Empty white lists: nothing escapes greylisting by the Debian defaults.
        std::fs::write(dir.join("whitelist_clients"), "").unwrap();
        std::fs::write(dir.join("whitelist_recipients"), "").unwrap();
        let (user, group) = run_as(&dir);
        let (listen_arg, socket) = match listen {
            Listen::Inet => {
                let port = TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port();
                let socket = HookSocket::Inet {
                    host: "127.0.0.1".into(),
                    port,
                };
                (format!("--inet=127.0.0.1:{port}"), socket)
            }
            Listen::Unix => {
                let path = dir.join("postgrey.sock");
                (format!("--unix={}", path.display()), HookSocket::Unix(path))
            }
        };
        let log = std::fs::File::create(dir.join("postgrey.log")).unwrap();
        let child = Command::new(POSTGREY)
            .arg(listen_arg)
            .arg(format!("--dbdir={}", dir.display()))
            .arg(format!("--delay={DELAY_SECS}"))
            .arg(format!(
                "--whitelist-clients={}",
                dir.join("whitelist_clients").display()
            ))
            .arg(format!(
                "--whitelist-recipients={}",
                dir.join("whitelist_recipients").display()
            ))
            .arg("--hostname=postgrey.test")
            .arg(format!("--user={user}"))
            .arg(format!("--group={group}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let pg = Postgrey { child, dir, socket };
        pg.wait_listening();
        Some(pg)
    }

    fn wait_listening(&self) {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let up = match &self.socket {
                HookSocket::Inet { host, port } => {
                    TcpStream::connect((host.as_str(), *port)).is_ok()
                }
                HookSocket::Unix(p) => std::os::unix::net::UnixStream::connect(p).is_ok(),
            };
            if up {
                return;
            }
            assert!(
                Instant::now() < end,
                "postgrey not listening on {} within 30 s; log:\n{}",
                self.socket,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgrey.log")).unwrap_or_default()
    }
}

impl Drop for Postgrey {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The user and group postgrey runs as, owning `dir`: as root, the package's
/// unprivileged `postgrey` user (or `nobody`); otherwise the current user.
fn run_as(dir: &Path) -> (String, String) {
    use nix::unistd::{chown, getegid, geteuid, Group, User};
    if geteuid().is_root() {
        let user = User::from_name("postgrey")
            .ok()
            .flatten()
            .or_else(|| User::from_name("nobody").ok().flatten())
            .expect("no postgrey or nobody user");
        let group = Group::from_gid(user.gid).ok().flatten().expect("group");
        chown(dir, Some(user.uid), Some(user.gid)).unwrap();
        for f in ["whitelist_clients", "whitelist_recipients"] {
            chown(&dir.join(f), Some(user.uid), Some(user.gid)).unwrap();
        }
        (user.name, group.name)
    } else {
        let user = User::from_uid(geteuid()).ok().flatten().expect("user");
        let group = Group::from_gid(getegid()).ok().flatten().expect("group");
        (user.name, group.name)
    }
}
