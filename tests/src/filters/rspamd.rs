//! rspamd in milter mode: one proxy worker (`milter = yes`, `self_scan = yes`, so no
//! normal worker and no redis) on 127.0.0.1:`port`, with Debian's rules from
//! /etc/rspamd and a local configuration directory in the test's directory that adds
//! rspamd's headers (milter_headers, local clients included) and points rspamd's own
//! resolver at a closed loopback port, so no rule can look anything up on the internet.

use super::{daemon_user, dir_for, have_peer, tcp_answers, Peer};
use std::path::Path;
use std::process::Command;

pub const PROGRAM: &str = "/usr/bin/rspamd";
pub const PACKAGE: &str = "rspamd";

/// The reply rspamd gives to the GTUBE test message (its `Gtube pattern` symbol).
pub const GTUBE_REPLY: &str = "Gtube pattern";

pub struct Rspamd {
    pub peer: Peer,
    pub port: u16,
}

impl Rspamd {
    /// Starts rspamd, or returns `None` after the SKIP line. `dns_port` must be a
    /// loopback port where nothing answers (the resolver then fails fast).
    pub fn start(test: &str, dir: &Path, port: u16, dns_port: u16) -> Option<Rspamd> {
        if !have_peer(test, PACKAGE, &[PROGRAM]) {
            return None;
        }
        let base = dir.join("rspamd");
        let local = base.join("local").join("local.d");
        std::fs::create_dir_all(&local).expect("mkdir");
        for d in ["run", "db", "log"] {
            std::fs::create_dir_all(base.join(d)).expect("mkdir");
        }
        std::fs::write(
            base.join("rspamd.conf"),
            format!(
                r#".include "$CONFDIR/common.conf"
options {{
    pidfile = "$RUNDIR/rspamd.pid";
    .include "$CONFDIR/options.inc"
    .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc"
}}
logging {{
    type = "console";
    level = "notice";
}}
worker "rspamd_proxy" {{
    bind_socket = "127.0.0.1:{port}";
    milter = yes;
    timeout = 120s;
    upstream "local" {{
        default = yes;
        self_scan = yes;
    }}
    count = 1;
    spam_header = "X-Spam";
    reject_message = "Spam message rejected";
}}
"#
            ),
        )
        .expect("rspamd.conf");
        std::fs::write(
            local.join("options.inc"),
            format!("dns {{ nameserver = [\"127.0.0.1:{dns_port}\"]; timeout = 1s; retransmits = 1; }}\n"),
        )
        .expect("options.inc");
        std::fs::write(
            local.join("milter_headers.conf"),
            "use = [\"x-spamd-result\", \"x-rspamd-server\", \"x-rspamd-queue-id\"];\n\
             skip_local = false;\nskip_authenticated = false;\n",
        )
        .expect("milter_headers.conf");
        // Modules that would fetch maps or query servers on the internet.
        for m in [
            "fuzzy_check",
            "rbl",
            "surbl",
            "url_redirector",
            "asn",
            "emails",
        ] {
            std::fs::write(local.join(format!("{m}.conf")), "enabled = false;\n")
                .expect("module conf");
        }
        let user = daemon_user("_rspamd");
        if user.is_some() {
            dir_for(&base, "_rspamd");
        }
        let mut cmd = Command::new(PROGRAM);
        cmd.arg("-f");
        if let Some(u) = &user {
            cmd.args(["-u", u, "-g", u]);
        }
        cmd.arg("-c")
            .arg(base.join("rspamd.conf"))
            .arg(format!(
                "--var=LOCAL_CONFDIR={}",
                base.join("local").display()
            ))
            .arg(format!("--var=RUNDIR={}", base.join("run").display()))
            .arg(format!("--var=DBDIR={}", base.join("db").display()))
            .arg(format!("--var=LOGDIR={}", base.join("log").display()));
        let mut peer = Peer::spawn("rspamd", cmd, &dir.join("rspamd.log"));
        peer.wait_ready(|| tcp_answers(port));
        Some(Rspamd { peer, port })
    }
}
