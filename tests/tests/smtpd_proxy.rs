//! The PROXY protocol behind the real HAProxy (`haproxy`): with `send-proxy` (v1) and
//! `send-proxy-v2` the client's own address (127.0.0.2, 127.0.0.3 as source
//! addresses) is the one logged, put in `Received:` and used for relay decisions; a
//! connection to the PROXY listener without a valid header is closed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod smtpd_support;
mod smtpd_tls_support;

use smtpd_support::Server;
use smtpd_tls_support::{have, last_queued};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const SEND: &str = r#"
import smtplib, sys
src, port, rcpt = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = smtplib.SMTP('127.0.0.1', port, local_hostname='client.test', source_address=(src, 0))
s.ehlo()
s.docmd('MAIL FROM:<a@b.example>')
code, text = s.docmd('RCPT TO:<%s>' % rcpt)
print('rcpt', code)
if code == 250:
    code, text = s.data('Subject: proxied\r\n\r\nhi\r\n')
    print(code, text.decode())
s.quit()
"#;

#[test]
fn haproxy_v1_and_v2_pass_the_client_address() {
    if !have("haproxy_v1_and_v2", "haproxy", "haproxy") {
        return;
    }
    let proxy_port = sloop_tests::free_port();
    let listen = format!("[\"127.0.0.1:{proxy_port}\"]");
    let srv = Server::start(
        "proxy",
        &[
            ("smtpd.proxy_listen", &listen),
            ("smtpd.proxy_timeout", "\"1s\""),
            ("relay.networks", "[\"127.0.0.3/32\"]"),
            ("remote.routes", "{ \"far.test\" = \"127.0.0.1:9\" }"),
        ],
        &[],
    );
    let (h1, h2) = (sloop_tests::free_port(), sloop_tests::free_port());
    let cfg = srv.dir.path.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
             frontend v1\n  bind 127.0.0.1:{h1}\n  default_backend sloop_v1\n\
             frontend v2\n  bind 127.0.0.1:{h2}\n  default_backend sloop_v2\n\
             backend sloop_v1\n  server s 127.0.0.1:{proxy_port} send-proxy\n\
             backend sloop_v2\n  server s 127.0.0.1:{proxy_port} send-proxy-v2\n"
        ),
    )
    .unwrap();
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _h = Haproxy(child);
    assert!(sloop_tests::wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", h2)).is_ok()
            && std::net::TcpStream::connect(("127.0.0.1", h1)).is_ok()
    }));
    let run = |src: &str, port: u16, rcpt: &str| {
        let (code, out, err) = sloop_tests::python(SEND, &[src, &port.to_string(), rcpt]);
        assert_eq!(code, 0, "{err}\n{}", srv.log());
        out
    };
    // v1 from 127.0.0.2: a local recipient is fine, relaying is not.
    let out = run("127.0.0.2", h1, "bob@localhost.test");
    let id = last_queued(&out);
    let (env, msg) = srv.committed(&id);
    assert!(
        String::from_utf8_lossy(&msg)
            .starts_with("Received: from client.test (unknown [127.0.0.2])"),
        "{}",
        String::from_utf8_lossy(&msg)
    );
    assert_eq!(env.client.as_deref(), Some("unknown[127.0.0.2]"));
    assert!(run("127.0.0.2", h1, "x@far.test").contains("rcpt 554"));
    // v2 from 127.0.0.3, which relay.networks trusts: it may relay.
    let out = run("127.0.0.3", h2, "x@far.test");
    let id = last_queued(&out);
    let (env, _) = srv.committed(&id);
    assert_eq!(env.client.as_deref(), Some("unknown[127.0.0.3]"));
    let log = srv.log();
    assert!(log.contains("connect from unknown[127.0.0.2]"), "{log}");
    assert!(log.contains("connect from unknown[127.0.0.3]"), "{log}");

    // Straight to the PROXY listener: no header, garbage, silence.
    let mut c = sloop_tests::Smtp::connect(proxy_port);
    c.send_raw(b"EHLO client.test\r\n");
    assert!(c.reply().is_empty(), "no SMTP reply without a PROXY header");
    let mut c = sloop_tests::Smtp::connect(proxy_port);
    let t0 = Instant::now();
    assert!(c.closed());
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );
    assert!(srv.wait_log(
        "no PROXY header within smtpd.proxy_timeout",
        Duration::from_secs(5)
    ));
    assert!(srv
        .log()
        .contains("malformed PROXY header: neither v1 nor v2"));
}
