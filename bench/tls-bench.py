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

Both start with an empty Maildir: the old --work and Postfix's old Maildir are moved
aside and deleted only after the last run. Once both servers are up it settles before
the first warm-up run (bench/common.py settle(): sync, wait 65 s or until 370 s after the previous benchmark's clean-up, then until I/O
pressure "full avg10" is below 1.0, giving up on the pressure after 120 s), and it prints `uptime` and the
CPU and I/O pressure before and after the runs.
"""
import argparse, os, statistics, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/common.py, from any cwd
from common import (benchload_maildir, configure_postfix, empty_trash, machine_state, restore_postfix, set_aside,
                    settle, sh, stop_postfix, wait_port)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("SLOOP_BENCH_SHARED") or os.path.join(os.path.dirname(ROOT), "shared", "bench")


def make_cert(work):
    crt, key = os.path.join(work, "bench.crt"), os.path.join(work, "bench.key")
    sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
       "-days", "30", "-subj", "/CN=localhost")
    os.chmod(key, 0o600)
    return crt, key


def start_postfix(crt, key):
    """Returns the TLS settings it replaced, for restore_postfix()."""
    return configure_postfix(SHARED, {"smtpd_tls_cert_file": crt, "smtpd_tls_key_file": key,
                                      "smtpd_tls_security_level": "may"})


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
    # The old work directory and Maildir are deleted after the last run, not now (see
    # common.py): deleting them just before measuring would slow every file creation.
    set_aside(args.work)
    os.makedirs(args.work)
    crt, key = make_cert(args.work)
    saved = start_postfix(crt, key)
    # Both start with an empty Maildir (a Maildir grown over earlier runs slows
    # Postfix's deliveries).
    set_aside(benchload_maildir())
    sloop = start_sloop(args.work, crt, key)
    targets = {"sloop": (2536, "benchload@bench.test"), "postfix": (2525, "benchload@bench.test")}
    maildirs = {"sloop": os.path.join(args.work, "mail", "bench.test", "benchload", "Maildir", "new"),
                "postfix": os.path.join(benchload_maildir(), "new")}
    # Counted from what is there now, should a Maildir not start empty.
    expected = {t: maildir_count(m) for t, m in maildirs.items()}
    rows = []
    try:
        settle()
        before = machine_state()
        print(f"machine before the runs: {before}", flush=True)
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
        # Read before the clean-up below, which loads the disk itself.
        after = machine_state()
        print(f"machine after the runs: {after}", flush=True)
    finally:
        sloop.terminate()
        sloop.wait()
        restore_postfix(saved)
        stop_postfix(SHARED)
        empty_trash()
    print(f"\n`uptime`: {sh('uptime')}\n")
    print(f"Machine before the runs: `{before}`\n\nMachine after the runs: `{after}`\n")
    print(f"| resumption | Sloop msgs/s (min/median/max) | Postfix msgs/s (min/median/max) | Sloop/Postfix |")
    print("| --- | --- | --- | --- |")
    for resume, res, ratio in rows:
        f = lambda v: f"{min(v):.0f} / {statistics.median(v):.0f} / {max(v):.0f}"
        print(f"| {resume} | {f(res['sloop'])} | {f(res['postfix'])} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
