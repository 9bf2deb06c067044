//! Harness for Sloop's end-to-end tests: find the built binaries, make a temp directory
//! with a spool and mailboxes, write a config on free loopback ports, start `sloopd` or a
//! single program, speak SMTP, and poll with deadlines (never sleep-and-hope).
//!
//! The binaries are built by `scripts/test` (`cargo build --workspace --bins` with the
//! smtpd's test-only fault injection) before `cargo test` runs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod filters;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Directory holding the workspace's built binaries (`target/debug`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/deps/<test> -> target/debug
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

/// Path of a built Sloop binary; panics with a hint when it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/test (it builds the binaries first)",
        p.display()
    );
    p
}

/// What a test adds to a documented deadline before it calls a reply late: the machine
/// running the tests may be loaded (CI, other builds), so an upper bound checks "by the
/// deadline, give or take a loaded scheduler", never a measurement. Speed belongs in
/// `bench/`, not in tests.
pub const LOAD_MARGIN: Duration = Duration::from_secs(5);

/// The path of a real peer program `program` from Debian package `package`, or `None`
/// after printing `SKIP: <test>: <package> not installed` when it is missing, unless
/// `SLOOP_REQUIRE_PEERS=1` is set: then a missing peer fails the test.
pub fn peer_program(test: &str, package: &str, program: &str) -> Option<PathBuf> {
    let path = PathBuf::from(program);
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var("SLOOP_REQUIRE_PEERS").as_deref() != Ok("1"),
        "{test}: {package} not installed ({program} missing) and SLOOP_REQUIRE_PEERS=1"
    );
    println!("SKIP: {test}: {package} not installed");
    None
}

/// Polls `cond` until it holds or `timeout` passes. Returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A free loopback TCP port (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A temporary directory with `spool/`, `run/`, `mail/`; removed on drop unless the
/// test panicked (kept for inspection then).
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        let base = bin_dir().join("e2e");
        let path = base.join(format!("{name}-{}-{}", std::process::id(), next_serial()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("mkdir");
        TestDir { path }
    }

    pub fn spool(&self) -> PathBuf {
        self.path.join("spool")
    }

    pub fn mail(&self) -> PathBuf {
        self.path.join("mail")
    }

    pub fn run(&self) -> PathBuf {
        self.path.join("run")
    }

    /// Writes `sloop.toml` for this directory: the given port, `localhost.test` as local
    /// domain with every address accepted, short retries, then `extra` (TOML that may
    /// add whole sections; keys in `[smtpd]`/`[queue]` etc. given in `extra` must not
    /// repeat the base ones: pass them through `overrides` instead).
    pub fn write_config(&self, port: u16, overrides: &[(&str, &str)], extra: &str) -> PathBuf {
        let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();
        let mut set = |key: &str, value: String| {
            let (s, k) = key.split_once('.').expect("dotted key");
            let idx = match sections.iter().position(|(name, _)| name == s) {
                Some(i) => i,
                None => {
                    sections.push((s.to_string(), Vec::new()));
                    sections.len() - 1
                }
            };
            let entries = &mut sections[idx].1;
            match entries.iter_mut().find(|(name, _)| name == k) {
                Some(e) => e.1 = value,
                None => entries.push((k.to_string(), value)),
            }
        };
        let q = |p: &Path| format!("{:?}", p.display().to_string());
        set("server.hostname", "\"sloop.test\"".into());
        set("server.spool_dir", q(&self.spool()));
        set("server.run_dir", q(&self.run()));
        set("server.bin_dir", q(&bin_dir()));
        set("smtpd.listen", format!("[\"127.0.0.1:{port}\"]"));
        set("smtpd.min_idle", "2".into());
        set("smtpd.max_processes", "50".into());
        set("domains.local", "[\"localhost.test\"]".into());
        set("local.mailbox_root", q(&self.mail()));
        set("local.mailboxes", "[\"@localhost.test\"]".into());
        set("queue.retry_min", "\"1s\"".into());
        set("queue.retry_max", "\"2s\"".into());
        set("queue.scan_interval", "\"1s\"".into());
        set("supervisor.restart_min", "\"50ms\"".into());
        set("supervisor.restart_max", "\"1s\"".into());
        set("supervisor.startup_crash_pause", "\"200ms\"".into());
        set("supervisor.stop_timeout", "\"5s\"".into());
        set("log.level", "\"info\"".into());
        for (k, v) in overrides {
            set(k, v.to_string());
        }
        let mut text = String::new();
        for (s, entries) in &sections {
            text.push_str(&format!("[{s}]\n"));
            for (k, v) in entries {
                text.push_str(&format!("{k} = {v}\n"));
            }
            text.push('\n');
        }
        text.push_str(extra);
        let p = self.path.join("sloop.toml");
        std::fs::write(&p, text).expect("write config");
        p
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn next_serial() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A running `sloopd`, stopped (SIGTERM, then SIGKILL) on drop. Its stderr goes to
/// `<dir>/sloopd.log`.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `sloopd -c config` and waits until `port` accepts connections.
    pub fn start(config: &Path, port: u16) -> Daemon {
        let d = Daemon::spawn(config);
        let ok = wait_until(Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(
            ok,
            "sloopd did not listen on {port}; log:\n{}",
            d.log_text()
        );
        d
    }

    /// Starts `sloopd -c config` without waiting.
    pub fn spawn(config: &Path) -> Daemon {
        let log = config.with_file_name("sloopd.log");
        let f = std::fs::File::create(&log).expect("log file");
        let child = Command::new(bin("sloopd"))
            .arg("-c")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("dup"))
            .stderr(f)
            .spawn()
            .expect("spawn sloopd");
        Daemon { child, log }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal to sloopd.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }

    /// Waits for sloopd to exit within `timeout`; returns its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut status = None;
        wait_until(timeout, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal(nix::sys::signal::Signal::SIGTERM);
            if self.wait_exit(Duration::from_secs(10)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// A minimal SMTP client for dialogue tests.
pub struct Smtp {
    pub reader: BufReader<TcpStream>,
    pub stream: TcpStream,
}

impl Smtp {
    pub fn connect(port: u16) -> Smtp {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        Smtp {
            reader: BufReader::new(stream.try_clone().expect("clone")),
            stream,
        }
    }

    /// Reads one complete (possibly multi-line) reply; returns its lines. An empty vec
    /// means the server closed the connection.
    pub fn reply(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => return lines,
                Ok(_) => {}
            }
            let done = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line.trim_end_matches(['\r', '\n']).to_string());
            if done {
                return lines;
            }
        }
    }

    /// The code of the next reply (0 when the connection closed).
    pub fn code(&mut self) -> u16 {
        self.reply()
            .last()
            .and_then(|l| l.get(..3))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    pub fn send(&mut self, line: &str) {
        self.stream.write_all(line.as_bytes()).expect("write");
        self.stream.write_all(b"\r\n").expect("write");
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Sends a command and returns the reply code.
    pub fn cmd(&mut self, line: &str) -> u16 {
        self.send(line);
        self.code()
    }

    /// True once the server has closed the connection (reads to EOF, or a reset).
    pub fn closed(&mut self) -> bool {
        // A server that closes with client octets still unread sends a reset, not a
        // FIN (a client that keeps talking, as the slow-drip test's does): closed too.
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

/// Pids of the processes whose parent is `ppid`, with their real uid.
pub fn children_of(ppid: u32) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u32>().ok())
        };
        if field("PPid:") == Some(ppid) {
            out.push((pid, field("Uid:").unwrap_or(u32::MAX)));
        }
    }
    out
}

/// The nice value of process `pid` (proc(5): field 19 of `/proc/PID/stat`, counted
/// after the command name, which may hold spaces), or `None` once it is gone or a zombie.
pub fn nice_of(pid: u32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // fields[0] is the state (field 3), so field 19 is fields[16].
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(16)?.parse().ok()
}

/// Runs a Python 3 script with arguments; returns (exit code, stdout, stderr).
pub fn python(script: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Files in `<mail>/<domain>/<user>/Maildir/new`.
pub fn maildir_new(mail: &Path, domain: &str, user: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(mail.join(domain).join(user).join("Maildir").join("new"))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
    v.sort();
    v
}
