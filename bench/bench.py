#!/usr/bin/env python3
"""Side-by-side benchmark of Sloop and Postfix on loopback (not for CI).

For each workload (sessions x message size x messages per connection) it runs each
target once unrecorded (warm-up), then the targets interleaved (A B A B ...) --reps
times with Postfix's smtp-source, and records per run: accepted messages/s (smtp-source wall time), end-to-end messages/s (until every
message is a file in the target's Maildir), server CPU ms per message (utime+stime of
the process tree, reaped children included), and peak PSS summed over the process tree
(sampled every 100 ms). It writes a Markdown table with min/median/max and the
Sloop/Postfix ratio to --out.

Postfix runs with ../shared/bench/peers.sh (127.0.0.1:2525, local(8) to ~benchload/Maildir);
Sloop runs from target/release on 127.0.0.1:2526 delivering to a Maildir under --work,
with its packaged defaults: the generated config sets only paths, the port, the host
name and the mailbox, as Postfix runs with Debian's main.cf. If a default is wrong for
speed, the default changes, not this script.
Durability: both fsync the queue file before 250 and the Maildir file before it is
moved into new/. Sloop also fsyncs the directory after each of those moves (incoming/
at the commit, the Maildir's new/ at delivery), so that the move itself survives a
crash; Postfix fsyncs no directory and relies on the file system for the names of the
files it fsynced. Sloop pays two directory fsyncs per message that Postfix does not.

Both targets start with an empty Maildir: the old ones (and the old --work) are moved
aside and deleted only after the last run. Once both servers are up it settles before
the first warm-up run (bench/common.py settle(): sync, wait 65 s or until 370 s after the previous benchmark's clean-up, then until I/O
pressure "full avg10" is below 1.0, giving up on the pressure after 120 s), and it prints `uptime` and the
CPU and I/O pressure before and after the runs (also into --out).
"""
import argparse
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/common.py, from any cwd
from common import (TICK, benchload_maildir, empty_trash, machine_state, postfix_master_pid, proc_table, run_postfix,
                    set_aside, settle, stop_postfix, tree, tree_cpu_ticks, wait_port)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The Postfix peer and load scripts: ../shared/bench beside the checkout, or wherever
# SLOOP_BENCH_SHARED points.
SHARED = os.environ.get("SLOOP_BENCH_SHARED") or os.path.join(os.path.dirname(ROOT), "shared", "bench")


def tree_pss_kib(root):
    total = 0
    for p in tree(root, proc_table()):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


class Target:
    def __init__(self, name, port, to, maildir, root_pid_fn):
        self.name, self.port, self.to, self.maildir, self.root_pid = name, port, to, maildir, root_pid_fn

    def count(self):
        try:
            return len(os.listdir(self.maildir))
        except OSError:
            return 0


def start_postfix():
    run_postfix(SHARED)
    set_aside(benchload_maildir())
    return Target("postfix", 2525, "benchload@bench.test", os.path.join(benchload_maildir(), "new"),
                  postfix_master_pid)


def start_sloop(work):
    set_aside(work)
    os.makedirs(work)
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
    if not wait_port(2526, interval=0.05):
        sys.exit("sloop did not start; see " + work)
    return proc, Target("sloop", 2526, "benchload@bench.test",
                        os.path.join(work, "mail", "bench.test", "benchload", "Maildir", "new"), lambda: proc.pid)


def run_once(t, sessions, msgs, size, reuse, timeout):
    before_files = t.count()
    root = t.root_pid()
    cpu0 = tree_cpu_ticks(root)
    peak = [0]
    stop = threading.Event()

    def sampler():
        while not stop.wait(0.1):
            peak[0] = max(peak[0], tree_pss_kib(root))
    th = threading.Thread(target=sampler)
    th.start()
    t0 = time.time()
    extra = ["-d"] if reuse else []
    out = subprocess.run(["bash", os.path.join(SHARED, "load.sh"), f"127.0.0.1:{t.port}", str(sessions), str(msgs),
                          str(size)] + extra, capture_output=True, text=True, env={**os.environ, "TO": t.to})
    t_acc = time.time() - t0
    deadline = time.time() + timeout
    while t.count() - before_files < msgs and time.time() < deadline:
        time.sleep(0.02)
    t_e2e = time.time() - t0
    delivered = t.count() - before_files
    time.sleep(0.3)  # let the last delivery agents finish their accounting
    stop.set()
    th.join()
    cpu_ms = (tree_cpu_ticks(root) - cpu0) * 1000 / TICK
    ok = out.returncode == 0 and delivered >= msgs
    return {"acc": msgs / t_acc, "e2e": delivered / t_e2e, "cpu": cpu_ms / max(msgs, 1),
            "pss": peak[0] / 1024, "ok": ok, "load": out.stdout.strip()}


def fmt(vals):
    return f"{min(vals):.1f} / {statistics.median(vals):.1f} / {max(vals):.1f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="only 20 sessions, 4 KiB, one message per connection")
    ap.add_argument("--workloads", default="",
                    help="only these workloads, SESSIONS:SIZE:MSGS_PER_CONN[,...] with MSGS_PER_CONN "
                         "1 or many, e.g. 20:4096:1,50:4096:1")
    ap.add_argument("--work", default="/var/tmp/sloop-bench")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results.md"))
    args = ap.parse_args()
    for tool in ("peers.sh", "load.sh"):
        if not os.path.isfile(os.path.join(SHARED, tool)):
            sys.exit(f"bench.py: {os.path.join(SHARED, tool)} is missing: run from a checkout "
                     "beside shared/, or set SLOOP_BENCH_SHARED to the shared/bench directory")

    workloads = [(20, 4096, False)] if args.quick else [
        (s, size, reuse) for s in (1, 20, 50) for size in (4096, 102400) for reuse in (False, True)]
    # Checked before anything starts: a bad --workloads must not leave servers running.
    if args.workloads:
        try:
            workloads = [(int(s), int(size), per == "many")
                         for s, size, per in (w.split(":") for w in args.workloads.split(","))]
        except ValueError:
            sys.exit("bench.py: --workloads wants SESSIONS:SIZE:1|many[,...]")

    subprocess.run(["cargo", "build", "--release", "--workspace", "--bins"], cwd=ROOT, check=True)
    postfix = start_postfix()
    sloop_proc, sloop = start_sloop(args.work)
    rows = []
    try:
        settle()
        before = machine_state()
        print(f"machine before the runs: {before}", flush=True)
        for sessions, size, reuse in workloads:
            msgs = (2000 if size <= 4096 else 500) if sessions > 1 else (500 if size <= 4096 else 200)
            res = {"sloop": [], "postfix": []}
            # One unrecorded run per target first: both start each workload warm
            # (Postfix's smtpd processes spawned, Sloop's pool of queue files filled).
            for t in (sloop, postfix):
                r = run_once(t, sessions, msgs, size, reuse, timeout=120)
                print(f"{t.name} s={sessions} size={size} reuse={reuse} warm-up: acc={r['acc']:.0f}/s (not recorded)",
                      flush=True)
            for rep in range(args.reps):
                for t in (sloop, postfix):
                    r = run_once(t, sessions, msgs, size, reuse, timeout=120)
                    res[t.name].append(r)
                    print(f"{t.name} s={sessions} size={size} reuse={reuse} rep={rep}: "
                          f"acc={r['acc']:.0f}/s e2e={r['e2e']:.0f}/s cpu={r['cpu']:.2f}ms pss={r['pss']:.0f}MiB ok={r['ok']}",
                          flush=True)
            rows.append((sessions, size, reuse, msgs, res))
        # Read before the clean-up below, which loads the disk itself.
        after = machine_state()
        print(f"machine after the runs: {after}", flush=True)
    finally:
        sloop_proc.send_signal(signal.SIGTERM)
        sloop_proc.wait(timeout=60)
        empty_trash()
        stop_postfix(SHARED)

    lines = ["| sessions | size | msgs/conn | metric | Sloop min/med/max | Postfix min/med/max | ratio min/med/max |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for sessions, size, reuse, msgs, res in rows:
        for key, label, higher in (("acc", "accepted msg/s", True), ("e2e", "end-to-end msg/s", True),
                                   ("cpu", "CPU ms/msg", False), ("pss", "peak PSS MiB", False)):
            s = [r[key] for r in res["sloop"]]
            p = [r[key] for r in res["postfix"]]
            ratios = [a / b for a, b in zip(s, p) if b]
            lines.append(f"| {sessions} | {size // 1024} KiB | {'many' if reuse else 1} | {label} | {fmt(s)} | {fmt(p)} | "
                         f"{fmt(ratios) if ratios else '-'} |")
        bad = [r["load"] for t in res for r in res[t] if not r["ok"]]
        if bad:
            lines.append(f"| {sessions} | {size // 1024} KiB | {'many' if reuse else 1} | FAILED RUNS | {len(bad)} | | |")
    with open(args.out, "w") as f:
        f.write(f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.reps} interleaved repetitions.\n\n")
        f.write(f"Machine before the runs: `{before}`\n\nMachine after the runs: `{after}`\n\n")
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
