//! postfix-policyd-spf-python behind a unix socket, with its own DNS.
//!
//! `policyd-spf` speaks the policy protocol on standard input and output (Postfix runs
//! it with `spawn(8)`); a small Python spawner here accepts on a unix socket in the
//! test's directory and runs one `policyd-spf` per connection. Both run in a new mount
//! and network namespace (`unshare -m -n`) where only the loopback interface exists,
//! `/etc/resolv.conf` is a bind mount of the test's own file naming 127.0.0.1, and
//! dnsmasq on 127.0.0.1:53 answers the test domains' SPF records and nothing else: no
//! lookup can leave the machine. The unix socket is reachable from outside the network
//! namespace (it is a file). Needs root.

use super::{dir_for, have_peer, have_root, unix_answers, Peer};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const PROGRAM: &str = "/usr/bin/policyd-spf";
pub const PACKAGE: &str = "postfix-policyd-spf-python";

/// `v=spf1 ip4:192.0.2.1 -all`: mail from 127.0.0.1 fails.
pub const FAIL_DOMAIN: &str = "spf-fail.test";
/// `v=spf1 ip4:127.0.0.1 -all`: mail from 127.0.0.1 passes.
pub const PASS_DOMAIN: &str = "spf-pass.test";
/// `v=spf1 ip4:192.0.2.1 ~all`: mail from 127.0.0.1 soft-fails.
pub const SOFTFAIL_DOMAIN: &str = "spf-soft.test";

const SPAWNER: &str = r#"
import os, signal, socket, sys
path, argv = sys.argv[1], sys.argv[2:]
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    os.unlink(path)
except FileNotFoundError:
    pass
s.bind(path)
os.chmod(path, 0o666)
s.listen(64)
while True:
    c, _ = s.accept()
    if os.fork() == 0:
        s.close()
        os.dup2(c.fileno(), 0)
        os.dup2(c.fileno(), 1)
        c.close()
        os.execv(argv[0], argv)
    c.close()
"#;

/// The policyd-spf configuration: Debian's defaults (reject on a Mail From `Fail`,
/// prepend `Received-SPF` otherwise), except that loopback clients are checked too.
const CONFIG: &str = "debugLevel = 1
TestOnly = 1
HELO_reject = False
Mail_From_reject = Fail
PermError_reject = False
TempError_Defer = False
skip_addresses = 192.0.2.255/32
";

pub struct PolicydSpf {
    pub peer: Peer,
    /// The policy service's socket: `unix:<this>` in the MTA's configuration.
    pub socket: PathBuf,
}

impl PolicydSpf {
    pub fn start(test: &str, dir: &Path) -> Option<PolicydSpf> {
        if !have_peer(test, PACKAGE, &[PROGRAM])
            || !have_peer(test, "dnsmasq-base", &["/usr/sbin/dnsmasq"])
            || !have_root(test, "mount and network namespace for a private resolver")
        {
            return None;
        }
        let base = dir.join("spf");
        std::fs::create_dir_all(&base).expect("mkdir");
        let sock_dir = dir_for(&base.join("sock"), "policyd-spf");
        let socket = sock_dir.join("spf.sock");
        let spawner = base.join("spawner.py");
        std::fs::write(&spawner, SPAWNER).expect("spawner");
        let conf = base.join("policyd-spf.conf");
        std::fs::write(&conf, CONFIG).expect("policyd-spf.conf");
        let resolv = base.join("resolv.conf");
        std::fs::write(&resolv, "nameserver 127.0.0.1\n").expect("resolv.conf");
        let records = [
            (FAIL_DOMAIN, "v=spf1 ip4:192.0.2.1 -all"),
            (PASS_DOMAIN, "v=spf1 ip4:127.0.0.1 -all"),
            (SOFTFAIL_DOMAIN, "v=spf1 ip4:192.0.2.1 ~all"),
        ]
        .iter()
        .map(|(d, r)| format!("--txt-record={d},'{r}' "))
        .collect::<String>();
        let privs = if nix::unistd::User::from_name("policyd-spf")
            .ok()
            .flatten()
            .is_some()
        {
            "setpriv --reuid=policyd-spf --regid=nogroup --init-groups"
        } else {
            ""
        };
        let script = format!(
            "set -e
ip link set lo up
mount --bind '{resolv}' /etc/resolv.conf
dnsmasq --keep-in-foreground --port=53 --listen-address=127.0.0.1 --bind-interfaces \
  --no-resolv --no-hosts --no-poll --pid-file= --log-facility=- {records} &
i=0; until ss -lnu | grep -q '127.0.0.1:53 '; do i=$((i+1)); [ $i -lt 600 ]; sleep 0.1; done
exec {privs} /usr/bin/python3 '{spawner}' '{socket}' {PROGRAM} '{conf}'
",
            resolv = resolv.display(),
            spawner = spawner.display(),
            socket = socket.display(),
            conf = conf.display(),
        );
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--net", "sh", "-c", &script]);
        let mut peer = Peer::spawn("policyd-spf", cmd, &dir.join("policyd-spf.log"));
        peer.wait_ready(|| unix_answers(&socket));
        Some(PolicydSpf { peer, socket })
    }
}
