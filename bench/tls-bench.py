#!/usr/bin/env python3
"""TLS benchmark: Sloop vs Postfix, STARTTLS, 4 KiB, one message per connection.

Both servers get the same RSA 2048 certificate and deliver to a Maildir; Postfix runs with
smtpd_tls_security_level = may (Debian's package via ../shared/bench/peers.sh, on
127.0.0.1:2525), Sloop (release build) on 127.0.0.1:2536. The load generator is
target/release/sloop-tls-load (tests/src/bin/sloop-tls-load.rs), which drives both the
same way: SESSIONS concurrent clients, each connection EHLO, STARTTLS, EHLO, MAIL,
RCPT, DATA, QUIT; with session resumption on (a client-side ticket cache) and off.
Each (target, resumption) pair runs once unrecorded, then the targets interleaved
--reps times. Prints a Markdown table of accepted msgs/s (min/median/max) and the
Sloop/Postfix ratio. As root:  bench/tls-bench.py [--reps 3] [--sessions 20]
"""
import argparse, os, statistics, subprocess, sys, time, socket

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("SLOOP_BENCH_SHARED", os.path.join(ROOT, "..", "shared", "bench"))


def sh(*cmd, check=True):
    return subprocess.run(cmd, check=check, capture_output=True, text=True).stdout.strip()


def wait_port(port, secs=30):
    end = time.time() + secs
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return True
        except OSError:
            time.sleep(0.2)
    return False


def make_cert(work):
    crt, key = os.path.join(work, "bench.crt"), os.path.join(work, "bench.key")
    sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
       "-days", "30", "-subj", "/CN=localhost")
    os.chmod(key, 0o600)
    return crt, key


POSTFIX_KEYS = ["smtpd_tls_cert_file", "smtpd_tls_key_file", "smtpd_tls_security_level"]


def start_postfix(crt, key):
    saved = {k: sh("postconf", "-h", k, check=False) for k in POSTFIX_KEYS}
    sh("bash", os.path.join(SHARED, "peers.sh"), "start-postfix", "maildir")
    sh("postconf", "-e", f"smtpd_tls_cert_file = {crt}", f"smtpd_tls_key_file = {key}",
       "smtpd_tls_security_level = may")
    sh("postfix", "reload", check=False)
    time.sleep(2)
    if not wait_port(2525):
        sys.exit("postfix did not come up")
    return saved


def restore_postfix(saved):
    sh("postconf", "-e", *[f"{k} = {v}" for k, v in saved.items()], check=False)
    sh("postfix", "reload", check=False)


def start_sloop(work, crt, key):
    cfg = os.path.join(work, "sloop.toml")
    with open(cfg, "w") as f:
        f.write(f"""[server]
hostname = "bench.test"
spool_dir = "{work}/spool"
run_dir = "{work}/run"

[smtpd]
listen = ["127.0.0.1:2536"]

[tls]
cert_file = "{crt}"
key_file = "{key}"

[domains]
local = ["bench.test"]

[local]
mailbox_root = "{work}/mail"
mailboxes = ["@bench.test"]
""")
    log = open(os.path.join(work, "sloopd.log"), "w")
    proc = subprocess.Popen([os.path.join(ROOT, "target", "release", "sloopd"), "-c", cfg],
                            stdout=log, stderr=log)
    if not wait_port(2536):
        sys.exit("sloop did not start; see " + work)
    time.sleep(2)
    return proc


def maildir_count(path):
    try:
        return len(os.listdir(path))
    except OSError:
        return 0


def drain(maildirs, expected, secs=120):
    """Waits until every target has delivered all it accepted, so that no run pays for
    the previous target's delivery backlog (Postfix accepts faster than its local(8)
    delivers; without this its backlog ran into Sloop's next run)."""
    end = time.time() + secs
    while time.time() < end:
        if all(maildir_count(m) >= expected[t] for t, m in maildirs.items()):
            return True
        time.sleep(0.05)
    print(f"drain: not every message delivered within {secs} s: "
          + ", ".join(f"{t} {maildir_count(m)}/{expected[t]}" for t, m in maildirs.items()), flush=True)
    return False


def load(port, sessions, msgs, resume, rcpt):
    out = sh(os.path.join(ROOT, "target", "release", "sloop-tls-load"), str(port), str(sessions),
             str(msgs), "4096", resume, rcpt)
    fields = dict(kv.split("=") for kv in out.split())
    return float(fields["msgs_per_sec"]), int(fields["failed"]), int(fields["resumed"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--work", default="/var/tmp/sloop-tls-bench")
    args = ap.parse_args()
    subprocess.run(["rm", "-rf", args.work])
    os.makedirs(args.work)
    crt, key = make_cert(args.work)
    saved = start_postfix(crt, key)
    # Both start with an empty Maildir (a Maildir grown over earlier runs slows
    # Postfix's deliveries); the old one is deleted after the last run.
    old_maildir = os.path.join(os.path.expanduser("~benchload"), "Maildir")
    trash = f"{old_maildir}.trash-{os.getpid()}"
    if os.path.exists(old_maildir):
        os.rename(old_maildir, trash)
    sloop = start_sloop(args.work, crt, key)
    targets = {"sloop": (2536, "benchload@bench.test"), "postfix": (2525, "benchload@bench.test")}
    maildirs = {"sloop": os.path.join(args.work, "mail", "bench.test", "benchload", "Maildir", "new"),
                "postfix": os.path.join(os.path.expanduser("~benchload"), "Maildir", "new")}
    # Counted from what is there now: Postfix's Maildir persists across runs.
    expected = {t: maildir_count(m) for t, m in maildirs.items()}
    rows = []
    try:
        for resume in ("on", "off"):
            res = {"sloop": [], "postfix": []}
            for t, (port, rcpt) in targets.items():
                drain(maildirs, expected)
                load(port, args.sessions, args.messages // 4, resume, rcpt)  # warm-up
                expected[t] += args.messages // 4
            for _ in range(args.reps):
                for t, (port, rcpt) in targets.items():
                    drain(maildirs, expected)
                    rate, failed, resumed = load(port, args.sessions, args.messages, resume, rcpt)
                    expected[t] += args.messages - failed
                    res[t].append(rate)
                    print(f"{t} resumption={resume}: {rate:.1f} msgs/s failed={failed} resumed={resumed}",
                          flush=True)
            s, p = statistics.median(res["sloop"]), statistics.median(res["postfix"])
            rows.append((resume, res, s / p if p else float("inf")))
    finally:
        sloop.terminate()
        sloop.wait()
        restore_postfix(saved)
        # Leave no Postfix listening on 127.0.0.1:2525 behind us.
        sh("bash", os.path.join(SHARED, "peers.sh"), "stop-postfix", check=False)
        subprocess.run(["rm", "-rf", trash])
    print(f"\n`uptime`: {sh('uptime')}\n")
    print(f"| resumption | Sloop msgs/s (min/median/max) | Postfix msgs/s (min/median/max) | Sloop/Postfix |")
    print("| --- | --- | --- | --- |")
    for resume, res, ratio in rows:
        f = lambda v: f"{min(v):.0f} / {statistics.median(v):.0f} / {max(v):.0f}"
        print(f"| {resume} | {f(res['sloop'])} | {f(res['postfix'])} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
