#!/usr/bin/env python3
"""Mail under an idle-connection attack: Sloop and Postfix side by side (not for CI).

The attack: ATTACKERS connections from six loopback addresses (127.0.0.2-7) that
connect and never say a word; each one that the server closes is opened again at once
(an attacker keeps the pressure on). With 120 of them, a pool of 100 SMTP processes is
held entirely (Sloop's smtpd.max_processes and Postfix's default_process_limit are
both 100).

The well-behaved client: 20 sessions from 127.0.0.1, each in a loop for --seconds:
connect, wait for the greeting (up to 60 s, the patience of a typical client's
connect-plus-banner), EHLO, MAIL, RCPT, DATA of 4 KiB, QUIT. A 421 (or no banner in
time) counts as refused and the session tries again after one second, as a sending
MTA would retry later. Reported per run: messages accepted (250 after DATA) per second,
the share of connection attempts refused with 421 or left without a banner, and the
greeting latency (median and max) of the attempts that got one.

Targets: Postfix at its defaults (../shared/bench/peers.sh start-postfix, 127.0.0.1:2525;
postscreen is off by default, stress mode on) and Sloop from target/release on
127.0.0.1:2526 at its defaults (smtpd.max_processes 100, overload_idle_timeout 10s,
connect_timeout 10s) except a local domain. The two are interleaved (S P S P ...),
--reps times. Results go to stdout as a Markdown table, with `uptime` before and after
(the machine may be shared).
"""
import argparse
import os
import selectors
import socket
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/common.py, from any cwd
import common  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("SLOOP_BENCH_SHARED") or os.path.join(os.path.dirname(ROOT), "shared", "bench")
BODY = ("Subject: overload bench\r\n\r\n" + ("x" * 62 + "\r\n") * 64).encode()


def wait_port(port, secs=30):
    return common.wait_port(port, secs, interval=0.1)


class Attack:
    """Keeps `n` silent connections open from six source addresses, reopening any
    the server closes."""

    def __init__(self, port, n):
        self.port, self.n, self.stop = port, n, threading.Event()
        self.reopened = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def open_one(self, sel, i):
        s = socket.socket()
        s.bind((f"127.0.0.{2 + i % 6}", 0))
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", self.port))
        except BlockingIOError:
            pass
        except OSError:
            s.close()
            return False
        sel.register(s, selectors.EVENT_READ, i)
        return True

    def run(self):
        sel = selectors.DefaultSelector()
        for i in range(self.n):
            self.open_one(sel, i)
        while not self.stop.is_set():
            for key, _ in sel.select(timeout=0.2):
                s = key.fileobj
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if not data:  # closed by the server: open it again
                    sel.unregister(s)
                    s.close()
                    self.reopened += 1
                    self.open_one(sel, key.data)
        for key in list(sel.get_map().values()):
            key.fileobj.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.stop.set()
        self.thread.join()


def reply(f):
    """One SMTP reply: its code (0 when the connection closed)."""
    while True:
        line = f.readline()
        if not line:
            return 0
        if line[3:4] != b"-":
            return int(line[:3]) if line[:3].isdigit() else 0


def client(port, until, stats, lock, to):
    while time.time() < until:
        t0 = time.time()
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=60)
            f = s.makefile("rb")
            code = reply(f)
            waited = time.time() - t0
            if code != 220:
                with lock:
                    stats["refused"] += 1
                    stats["attempts"] += 1
                s.close()
                time.sleep(1)
                continue
            with lock:
                stats["greet"].append(waited)
                stats["attempts"] += 1
            ok = True
            for cmd, want in ((b"EHLO good.test", 250), (b"MAIL FROM:<a@good.test>", 250),
                              (f"RCPT TO:<{to}>".encode(), 250), (b"DATA", 354)):
                s.sendall(cmd + b"\r\n")
                if reply(f) != want:
                    ok = False
                    break
            if ok:
                s.sendall(BODY + b".\r\n")
                ok = reply(f) == 250
                s.sendall(b"QUIT\r\n")
            with lock:
                stats["sent" if ok else "failed"] += 1
            s.close()
        except OSError:
            with lock:
                stats["refused"] += 1
                stats["attempts"] += 1
            time.sleep(1)


def run_once(port, to, attackers, seconds, sessions):
    stats = {"sent": 0, "failed": 0, "refused": 0, "attempts": 0, "greet": []}
    lock = threading.Lock()
    with Attack(port, attackers) as attack:
        time.sleep(3)  # let the attack take the pool
        t0 = time.time()
        until = t0 + seconds
        threads = [threading.Thread(target=client, args=(port, until, stats, lock, to)) for _ in range(sessions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.time() - t0
        reopened = attack.reopened
    g = sorted(stats["greet"])
    return {
        "msgs_s": stats["sent"] / wall,
        "sent": stats["sent"],
        "refused_share": stats["refused"] / max(stats["attempts"], 1),
        "attempts": stats["attempts"],
        "greet_med": statistics.median(g) if g else None,
        "greet_max": g[-1] if g else None,
        "reopened": reopened,
    }


def start_sloop(work):
    os.makedirs(work, exist_ok=True)
    cfg = os.path.join(work, "sloop.toml")
    with open(cfg, "w") as f:
        f.write(f"""[server]
hostname = "bench.test"
spool_dir = "{work}/spool"
run_dir = "{work}/run"

[smtpd]
listen = ["127.0.0.1:2526"]

[domains]
local = ["bench.test"]

[local]
mailbox_root = "{work}/mail"
mailboxes = ["@bench.test"]
""")
    log = open(os.path.join(work, "sloopd.log"), "w")
    proc = subprocess.Popen([os.path.join(ROOT, "target", "release", "sloopd"), "-c", cfg], stdout=log, stderr=log)
    if not wait_port(2526):
        sys.exit("sloop did not start; see " + work)
    return proc


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=45)
    ap.add_argument("--attackers", type=int, default=120)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--work", default="/var/tmp/sloop-bench-overload")
    args = ap.parse_args()
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print("uptime before:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    subprocess.run(["bash", os.path.join(SHARED, "peers.sh"), "start-postfix", "maildir"], check=True)
    sloop = start_sloop(args.work)
    targets = [("sloop", 2526, "benchload@bench.test"), ("postfix", 2525, "benchload@bench.test")]
    results = {name: [] for name, _, _ in targets}
    try:
        for rep in range(args.reps):
            for name, port, to in targets:
                r = run_once(port, to, args.attackers, args.seconds, args.sessions)
                results[name].append(r)
                print(f"rep {rep + 1} {name}: {r}", flush=True)
    finally:
        sloop.send_signal(15)
        sloop.wait(timeout=60)
        subprocess.run(["bash", os.path.join(SHARED, "peers.sh"), "stop-postfix"])
    print("uptime after:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print()
    print("| target | run | msgs/s | sent | attempts | refused or no banner | greeting median / max s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for rep in range(args.reps):
        for name, _, _ in targets:
            r = results[name][rep]
            greet = ("no banner" if r["greet_med"] is None
                     else f"{r['greet_med']:.2f} / {r['greet_max']:.2f}")
            print(f"| {name} | {rep + 1} | {r['msgs_s']:.1f} | {r['sent']} | {r['attempts']} | "
                  f"{100 * r['refused_share']:.1f}% | {greet} |")


if __name__ == "__main__":
    main()
