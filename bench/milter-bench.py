#!/usr/bin/env python3
"""Milter benchmark: Sloop vs Postfix, each with the same OpenDKIM signing every message.

One OpenDKIM (Debian's package, `Mode s`, a 2048-bit test key for bench.test made with
opendkim-genkey, inet:127.0.0.1:23160, run as the opendkim user) serves both MTAs:
  - Postfix: Debian's package via ../shared/bench/peers.sh (127.0.0.1:2525, Maildir),
    Debian's defaults plus `smtpd_milters = inet:127.0.0.1:23160` (restored afterwards);
  - Sloop: target/release on 127.0.0.1:2556, its packaged defaults (the config sets only
    paths, the port, the host name and the mailbox) plus one `[[milter]]` table for
    that OpenDKIM.
Load: Postfix's smtp-source (../shared/bench/load.sh), 20 sessions, 4 KiB, one message
per connection, From/To in bench.test. Each target runs once unrecorded (warm-up), then
the two interleaved --reps times (Sloop, Postfix, Sloop, Postfix, ...). Per run:
accepted messages/s (smtp-source wall time); after each run the delivered messages are
counted and every one must carry a DKIM-Signature (one per run is verified with dkimpy,
Debian's python3-dkim, against the test key). Prints a Markdown table with
min/median/max and the Sloop/Postfix ratio, and `uptime`.

Both start with an empty Maildir: the old --work and Postfix's old Maildir are moved
aside and deleted only after the last run. Once OpenDKIM and both MTAs are up it
settles before the first warm-up run (bench/common.py settle(): sync, wait 65 s or until 370 s after the previous benchmark's clean-up, then
until I/O pressure "full avg10" is below 1.0, giving up on the pressure after 120 s), and it prints
`uptime` and the CPU and I/O pressure before and after the runs.

As root, from a checkout beside shared/ (or SLOOP_BENCH_SHARED=.../shared/bench):
    bench/milter-bench.py [--reps 3] [--sessions 20] [--messages 1000]
    bench/milter-bench.py --without-milter   # the same runs with no milter: the baseline
    bench/milter-bench.py --no-build --sloop-bin DIR   # Sloop's programs from DIR (another build)
    bench/milter-bench.py --milter-reuse false # `reuse = false` in the [[milter]] table
    bench/milter-bench.py --socket unix        # OpenDKIM on a Unix socket (Debian's default)

--socket unix puts OpenDKIM's socket in /var/spool/postfix/sloop-bench-opendkim/ (inside
Postfix's chroot, as Debian's README for OpenDKIM with Postfix advises): Postfix asks for
unix:/sloop-bench-opendkim/opendkim.sock, Sloop for the whole path. On a Unix socket there
are no ACKs, so neither MTA can be held up by libmilter's Nagle algorithm (see
docs/benchmarks.md, "The 40 ms stall").
"""
import argparse
import glob
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/common.py, from any cwd
from common import (POSTFIX_PORT, benchload_maildir, configure_postfix, empty_trash, machine_state,
                    postfix_master_pid, restore_postfix, set_aside, settle, sh, stop_postfix, tree_cpu_ms, wait_port)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("SLOOP_BENCH_SHARED") or os.path.join(os.path.dirname(ROOT), "shared", "bench")
DKIM_PORT = 23160
# --socket unix: a directory inside Postfix's chroot (its smtpd runs chrooted).
UNIX_DIR = "/var/spool/postfix/sloop-bench-opendkim"
UNIX_SOCKET = UNIX_DIR + "/opendkim.sock"
POSTFIX_UNIX = "unix:/sloop-bench-opendkim/opendkim.sock"
SLOOP_PORT = 2556
SYSTEM_PYTHON = "/usr/bin/python3"  # has Debian's python3-dkim

VERIFY = r'''
import re, sys, dkim
record = "".join(re.findall(r'"([^"]*)"', open(sys.argv[1]).read())).encode()
msg = open(sys.argv[2], "rb").read()
ok = dkim.verify(msg, dnsfunc=lambda name, timeout=5: record if name.startswith(b"bench._domainkey.") else None)
sys.exit(0 if ok else 1)
'''


def start_opendkim(work, unix=False):
    keys = os.path.join(work, "dkim")
    os.makedirs(keys)
    sh("opendkim-genkey", "-d", "bench.test", "-s", "bench", "-D", keys)
    sh("chown", "-R", "opendkim:opendkim", keys)
    os.chmod(keys, 0o700)
    conf = os.path.join(work, "opendkim.conf")
    with open(conf, "w") as f:
        f.write(f"""Syslog no
Mode s
Domain bench.test
Selector bench
KeyFile {keys}/bench.private
Socket {"local:" + UNIX_SOCKET if unix else f"inet:{DKIM_PORT}@127.0.0.1"}
UMask 000
InternalHosts 127.0.0.1
Canonicalization relaxed/simple
UserID opendkim
RequireSafeKeys false
""")
    if unix:
        shutil.rmtree(UNIX_DIR, ignore_errors=True)
        os.makedirs(UNIX_DIR)
        sh("chown", "opendkim:opendkim", UNIX_DIR)
        os.chmod(UNIX_DIR, 0o755)
    log = open(os.path.join(work, "opendkim.log"), "w")
    proc = subprocess.Popen(["opendkim", "-f", "-x", conf], stdout=log, stderr=log, start_new_session=True)
    deadline = time.time() + 60
    while unix and not os.path.exists(UNIX_SOCKET) and time.time() < deadline:
        time.sleep(0.1)
    if not (os.path.exists(UNIX_SOCKET) if unix else wait_port(DKIM_PORT, 60)):
        sys.exit("opendkim did not start; see " + work)
    return proc, os.path.join(keys, "bench.txt")


def start_postfix(milter=True, unix=False):
    """Returns the milter settings it replaced (for restore_postfix()) and the Maildir's new/."""
    socket = POSTFIX_UNIX if unix else f"inet:127.0.0.1:{DKIM_PORT}"
    saved = configure_postfix(SHARED, {"smtpd_milters": socket if milter else "",
                                       "non_smtpd_milters": "", "milter_default_action": "tempfail"}, secs=60)
    return saved, os.path.join(benchload_maildir(), "new")


def start_sloop(work, milter=True, bindir=None, reuse=None, unix=False):
    socket = "unix:" + UNIX_SOCKET if unix else f"inet:127.0.0.1:{DKIM_PORT}"
    table = f"""
[[milter]]
name = "opendkim"
socket = "{socket}"
""" if milter else ""
    if milter and reuse is not None:
        table += f"reuse = {reuse}\n"
    cfg = os.path.join(work, "sloop.toml")
    with open(cfg, "w") as f:
        f.write(f"""[server]
hostname = "bench.test"
spool_dir = "{work}/spool"
run_dir = "{work}/run"

[smtpd]
listen = ["127.0.0.1:{SLOOP_PORT}"]

[domains]
local = ["bench.test"]

[local]
mailbox_root = "{work}/mail"
mailboxes = ["@bench.test"]
{table}""")
    log = open(os.path.join(work, "sloopd.log"), "w")
    bindir = bindir or os.path.join(ROOT, "target", "release")
    proc = subprocess.Popen([os.path.join(bindir, "sloopd"), "-c", cfg],
                            stdout=log, stderr=log)
    if not wait_port(SLOOP_PORT, 60):
        sys.exit("sloop did not start; see " + work)
    time.sleep(2)
    return proc, os.path.join(work, "mail", "bench.test", "benchload", "Maildir", "new")


def files(maildir):
    try:
        return set(os.listdir(maildir))
    except OSError:
        return set()


def signed(path):
    with open(path, "rb") as f:
        head = f.read(65536).split(b"\n\n", 1)[0]
    return re.search(rb"(?im)^DKIM-Signature:", head) is not None


def run_once(port, maildir, sessions, msgs, public, mta_pid, dkim_pid, milter=True):
    before = files(maildir)
    cpu0 = (tree_cpu_ms(mta_pid()), tree_cpu_ms(dkim_pid))
    out = subprocess.run(["bash", os.path.join(SHARED, "load.sh"), f"127.0.0.1:{port}", str(sessions), str(msgs),
                          "4096"], capture_output=True, text=True,
                         env={**os.environ, "FROM": "load@bench.test", "TO": "benchload@bench.test"})
    fields = dict(kv.split("=", 1) for kv in out.stdout.split() if "=" in kv)
    rate = float(fields.get("msgs_per_s", 0))
    deadline = time.time() + 120
    while len(files(maildir) - before) < msgs and time.time() < deadline:
        time.sleep(0.1)
    new = sorted(files(maildir) - before)
    cpu = ((tree_cpu_ms(mta_pid()) - cpu0[0]) / msgs, (tree_cpu_ms(dkim_pid) - cpu0[1]) / msgs)
    unsigned = sum(1 for n in new if not signed(os.path.join(maildir, n)))
    if not milter:
        unsigned = 0
    verified = not milter or bool(new) and subprocess.run(
        [SYSTEM_PYTHON, "-c", VERIFY, public, os.path.join(maildir, new[-1])]).returncode == 0
    ok = out.returncode == 0 and len(new) >= msgs and unsigned == 0 and verified
    return rate, ok, cpu, (f"delivered={len(new)} unsigned={unsigned} verified={verified} rc={out.returncode} "
                           f"cpu_ms/msg: mta={cpu[0]:.2f} opendkim={cpu[1]:.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--work", default="/var/tmp/sloop-milter-bench")
    ap.add_argument("--no-build", action="store_true", help="use target/release as it is")
    ap.add_argument("--without-milter", action="store_true",
                    help="the baseline: the same runs with neither MTA asking OpenDKIM")
    ap.add_argument("--sloop-bin", help="directory of Sloop's programs (default target/release)")
    ap.add_argument("--milter-reuse", choices=["true", "false"],
                    help="set `reuse` in Sloop's [[milter]] table (default: not written)")
    ap.add_argument("--socket", choices=["inet", "unix"], default="inet",
                    help="OpenDKIM's socket: inet:127.0.0.1:23160 (default) or a Unix socket")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("milter-bench.py: run as root (Postfix, OpenDKIM's user)")
    for tool in ("peers.sh", "load.sh"):
        if not os.path.isfile(os.path.join(SHARED, tool)):
            sys.exit(f"milter-bench.py: {os.path.join(SHARED, tool)} is missing: set SLOOP_BENCH_SHARED")
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--workspace", "--bins"], cwd=ROOT, check=True)
    # The old work directory and Maildir are deleted after the last run, not now (see
    # common.py): deleting them just before measuring would slow every file creation.
    set_aside(args.work)
    os.makedirs(args.work)
    unix = args.socket == "unix"
    dkim, public = start_opendkim(args.work, unix)
    milter = not args.without_milter
    saved, postfix_maildir = start_postfix(milter, unix)
    # Both start with an empty Maildir, as Sloop's under the new --work does.
    set_aside(benchload_maildir())
    sloop, sloop_maildir = start_sloop(args.work, milter, args.sloop_bin, args.milter_reuse, unix)
    targets = [("sloop", SLOOP_PORT, sloop_maildir, lambda: sloop.pid),
               ("postfix", POSTFIX_PORT, postfix_maildir, postfix_master_pid)]
    res = {"sloop": [], "postfix": []}
    try:
        settle()
        before = machine_state()
        print(f"machine before the runs: {before}", flush=True)
        uptimes = [sh("uptime")]
        for name, port, maildir, root in targets:
            rate, ok, _, info = run_once(port, maildir, args.sessions, max(args.messages // 4, 50), public, root,
                                         dkim.pid, milter)
            print(f"{name} warm-up: {rate:.1f} msgs/s ok={ok} {info} (not recorded)", flush=True)
        for rep in range(args.reps):
            for name, port, maildir, root in targets:
                rate, ok, cpu, info = run_once(port, maildir, args.sessions, args.messages, public, root, dkim.pid,
                                               milter)
                res[name].append((rate, ok, cpu))
                print(f"{name} rep={rep}: {rate:.1f} msgs/s ok={ok} {info}", flush=True)
            uptimes.append(sh("uptime"))
        # Read before the clean-up below, which loads the disk itself.
        after = machine_state()
        print(f"machine after the runs: {after}", flush=True)
    finally:
        sloop.terminate()
        sloop.wait()
        restore_postfix(saved)
        stop_postfix(SHARED)
        os.killpg(dkim.pid, 15)
        dkim.wait()
        if unix:
            shutil.rmtree(UNIX_DIR, ignore_errors=True)
        empty_trash()
    f = lambda v: f"{min(v):.1f} / {statistics.median(v):.1f} / {max(v):.1f}"
    s = [r[0] for r in res["sloop"]]
    p = [r[0] for r in res["postfix"]]
    ratios = [a / b for a, b in zip(s, p) if b]
    print(f"\nRun {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {'with' if milter else 'WITHOUT'} the milter, "
          f"Sloop from {args.sloop_bin or 'target/release'}"
          f"{', reuse = ' + args.milter_reuse if args.milter_reuse else ''}, "
          f"OpenDKIM on {'a Unix socket' if unix else 'inet:127.0.0.1:' + str(DKIM_PORT)}, "
          f"{args.reps} interleaved repetitions, "
          f"{args.sessions} sessions, 4 KiB, {args.messages} messages per run, one per connection.\n")
    med = lambda name, i: statistics.median(r[2][i] for r in res[name])
    print("| target | accepted msgs/s (min/median/max) | MTA CPU ms/msg (median) | OpenDKIM CPU ms/msg (median) "
          "| all signed and delivered |")
    print("| --- | --- | --- | --- | --- |")
    plus = " + OpenDKIM" if milter else " (no milter)"
    for name, label in (("sloop", "Sloop" + plus), ("postfix", "Postfix" + plus)):
        v = [r[0] for r in res[name]]
        print(f"| {label} | {f(v)} | {med(name, 0):.2f} | {med(name, 1):.2f} | {all(r[1] for r in res[name])} |")
    print(f"| Sloop/Postfix (per repetition) | {f(ratios) if ratios else '-'} | | | |")
    print("\n`uptime` before and after each repetition:\n")
    for u in uptimes:
        print(f"    {u}")
    print(f"\nMachine before the runs: `{before}`\n\nMachine after the runs: `{after}`")
    for path in glob.glob(os.path.join(args.work, "mail")):
        shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
