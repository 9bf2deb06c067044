//! The one failure policy of the filter hooks (docs/filters.md, "Failure policy"), row
//! by row, end to end: a real `sloopd` on loopback with `[[policy]]` and `[[milter]]`
//! hooks pointing at scripted fake services (`fake_hook`) that are missing, refuse,
//! never answer, answer garbage or an unknown action, answer a code illegal for the
//! phase, answer text with control characters, close mid-reply, negotiate a protocol
//! the MTA does not speak, or crash at a given stage. Each test asserts the client's
//! exact reply, that it came within the budget (an upper bound with the load margin,
//! never a measurement), and the log line as the syslog daemon receives it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fake_hook;

use fake_hook::{Endpoint, FakeMilter, MilterScript};
use sloop_tests::TestDir;

// ---------------------------------------------------------------------------------
// The fake milter itself, checked against an independent MTA side
// ---------------------------------------------------------------------------------

/// miltertest (the milter test driver from OpenDKIM's tools) plays the MTA: it
/// negotiates protocol 6 and walks every stage; a fake that answers them all proves it
/// speaks the protocol, so the failures above are the MTA's and not the fake's.
const MILTERTEST_SCRIPT: &str = r#"
conn = mt.connect(SOCKET)
if conn == nil then error "connect" end
local function step(what, r)
  if r ~= nil then error(what .. ": " .. r) end
  if mt.getreply(conn) ~= SMFIR_CONTINUE then error(what .. ": not continue") end
end
step("conninfo", mt.conninfo(conn, "client.test", "192.0.2.1"))
step("helo", mt.helo(conn, "client.test"))
step("mail", mt.mailfrom(conn, "<s@b.example>"))
step("rcpt", mt.rcptto(conn, "<a@localhost.test>"))
step("data", mt.data(conn))
step("header", mt.header(conn, "Subject", "x"))
step("eoh", mt.eoh(conn))
step("body", mt.bodystring(conn, "body\r\n"))
step("eom", mt.eom(conn))
mt.disconnect(conn)
mt.echo("all stages answered")
"#;

#[test]
fn fake_milter_speaks_protocol_6_to_miltertest() {
    let Some(miltertest) = sloop_tests::peer_program(
        "fake_milter_speaks_protocol_6_to_miltertest",
        "miltertest",
        "/usr/bin/miltertest",
    ) else {
        return;
    };
    let fake = FakeMilter::start(Endpoint::Tcp, MilterScript::default());
    let port = fake.socket.rsplit(':').next().unwrap();
    let dir = TestDir::new("ff-miltertest");
    let script = dir.path.join("walk.lua");
    let lua = MILTERTEST_SCRIPT.replace("SOCKET", &format!("\"inet:{port}@127.0.0.1\""));
    std::fs::write(&script, lua).unwrap();
    let out = std::process::Command::new(miltertest)
        .arg("-s")
        .arg(&script)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("all stages answered"), "{text}");
    assert_eq!(fake.commands(0), "OCHMRTLNBEQ");
}
