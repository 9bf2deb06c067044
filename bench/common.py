"""Helpers shared by bench/bench.py, bench/tls-bench.py and bench/milter-bench.py.

Importing this module has no side effect: the scripts import it before parsing their
options, and `--help` must start nothing.
"""
import glob
import os
import shutil
import socket
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")
POSTFIX_PORT = 2525  # where ../shared/bench/peers.sh runs Postfix's smtpd
POSTFIX_MASTER_PID = "/var/spool/postfix/pid/master.pid"


def sh(*cmd, check=True):
    return subprocess.run(cmd, check=check, capture_output=True, text=True).stdout.strip()


def wait_port(port, secs=30, interval=0.2):
    deadline = time.time() + secs
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(interval)
    return False


# --- Old mailboxes and work directories ---------------------------------------------
#
# Old mailboxes and spools are moved aside at start and deleted only after the last
# run. On ext4 without a journal the inode allocator skips, probing the inode table
# for each one, every inode freed in the last 60 s (360 s while its inode-table block
# is dirty; `recently_deleted` in fs/ext4/ialloc.c), so deleting thousands of files
# just before measuring would slow every file creation of the runs, both targets'
# deliveries included. A mailbox that grows over many benchmark runs also slows its
# target's deliveries and the harness's counting.
TRASH = []


def set_aside(path):
    # Leftovers of an interrupted run go too.
    TRASH.extend(glob.glob(glob.escape(path) + ".trash-*"))
    if os.path.exists(path):
        aside = f"{path}.trash-{os.getpid()}"
        os.rename(path, aside)
        TRASH.append(aside)


# When the last benchmark's clean-up ended (written by empty_trash, read by settle), so
# that a run started right after another waits out the long window of its deletions.
DELETION_STAMP = "/var/tmp/sloop-bench.last-deletion"


def empty_trash():
    for path in TRASH:
        shutil.rmtree(path, ignore_errors=True)
    if TRASH:
        try:
            with open(DELETION_STAMP, "w") as f:
                f.write(f"{time.time():.0f}\n")
        except OSError:
            pass


def last_bench_deletion():
    """When the last benchmark's clean-up ended (time.time()), or None."""
    try:
        with open(DELETION_STAMP) as f:
            return float(f.read().strip())
    except (OSError, ValueError):
        return None


def benchload_maildir():
    """The Maildir Postfix's local(8) delivers to (peers.sh's benchload user)."""
    return os.path.join(os.path.expanduser("~benchload"), "Maildir")


# --- A quiet machine before the first run -------------------------------------------

# 60 s is ext4's window for an inode freed while its inode-table block is clean (the
# sync below cleans it), plus 5 s of margin (i_dtime has one-second resolution): the
# least settle() waits, for deletions it does not know of. An inode whose table block
# the runs dirty again falls under the 360 s window: after a benchmark's own clean-up
# (DELETION_STAMP) settle() waits that out in full.
SETTLE_AFTER_DELETION = 65
SETTLE_AFTER_BENCH_DELETION = 370
QUIET_IO_FULL = 1.0  # % of the last 10 s in which every task waited for I/O
QUIET_WAIT_MAX = 120  # s from the start of settle(); then measure anyway, with a warning


def pressure(resource, line="some", avg="avg60"):
    """One average from /proc/pressure/<resource> ("cpu", "io"), or None without PSI."""
    try:
        with open(f"/proc/pressure/{resource}") as f:
            for row in f:
                kind, *fields = row.split()
                if kind == line:
                    return float(dict(kv.split("=", 1) for kv in fields)[avg])
    except (OSError, KeyError, ValueError):
        pass
    return None


def settle(last_deletion=None):
    """Flushes dirty data, then waits until SETTLE_AFTER_DELETION s have passed since
    `last_deletion` (a time.time() value; None: count from the sync, as if a deletion,
    ours or a previous run's clean-up, had just happened) and the I/O pressure "full
    avg10" is below QUIET_IO_FULL. Prints one line saying what it waited for."""
    start = time.time()
    os.sync()
    synced = time.time()
    ready = (synced if last_deletion is None else last_deletion) + SETTLE_AFTER_DELETION
    stamp = last_bench_deletion()
    if stamp is not None:
        ready = max(ready, stamp + SETTLE_AFTER_BENCH_DELETION)
    # The deletion window is always waited out in full; only the wait for low I/O pressure gives up.
    give_up = max(start + QUIET_WAIT_MAX, ready)
    while True:
        now = time.time()
        io = pressure("io", "full", "avg10")
        if now >= ready and (io is None or io < QUIET_IO_FULL):
            break
        if now >= give_up:
            print(f"settle: WARNING: the machine is not quiet: io full avg10 = {io:.2f} "
                  f"(want < {QUIET_IO_FULL}) after {now - start:.0f} s; measuring anyway", flush=True)
            break
        time.sleep(1)
    since = ("the sync (no deletion time given)" if last_deletion is None
             else f"the last deletion ({start - last_deletion:.0f} s before settle)")
    if stamp is not None and stamp + SETTLE_AFTER_BENCH_DELETION > synced + SETTLE_AFTER_DELETION:
        since += (f", and {SETTLE_AFTER_BENCH_DELETION} s past the last benchmark's clean-up "
                  f"({start - stamp:.0f} s before settle)")
    io_text = "no /proc/pressure/io" if io is None else f"io full avg10 < {QUIET_IO_FULL} (now {io:.2f})"
    print(f"settle: waited {now - start:.0f} s for: sync ({synced - start:.1f} s), "
          f"{SETTLE_AFTER_DELETION} s past {since}, {io_text}", flush=True)


def machine_state():
    """One line: `uptime` and the CPU and I/O pressure "some avg60" (% of the last 60 s
    in which some task waited), to print before and after the runs."""
    def avg60(resource):
        value = pressure(resource)
        return "n/a" if value is None else f"{value:.2f}"
    return f"{sh('uptime', check=False)}; pressure some avg60: cpu {avg60('cpu')}, io {avg60('io')}"


# --- Postfix (Debian's package, driven by ../shared/bench/peers.sh) ------------------

def run_postfix(shared):
    sh("bash", os.path.join(shared, "peers.sh"), "start-postfix", "maildir")


def stop_postfix(shared):
    # Leave no Postfix listening on 127.0.0.1:2525 behind us.
    sh("bash", os.path.join(shared, "peers.sh"), "stop-postfix", check=False)


def configure_postfix(shared, settings, secs=30):
    """Starts Postfix with `settings` (main.cf name -> value) over Debian's defaults;
    returns the values they replace, for restore_postfix()."""
    run_postfix(shared)  # first: on a fresh machine it installs Postfix (and postconf)
    saved = {k: sh("postconf", "-h", k, check=False) for k in settings}
    sh("postconf", "-e", *[f"{k} = {v}" for k, v in settings.items()])
    sh("postfix", "reload", check=False)
    time.sleep(2)
    if not wait_port(POSTFIX_PORT, secs):
        sys.exit("postfix did not come up")
    return saved


def restore_postfix(saved):
    sh("postconf", "-e", *[f"{k} = {v}" for k, v in saved.items()], check=False)
    sh("postfix", "reload", check=False)


def postfix_master_pid():
    with open(POSTFIX_MASTER_PID) as f:
        return int(f.read().strip())


# --- CPU time of a process tree ------------------------------------------------------

def proc_table():
    """pid -> (ppid, utime+stime+cutime+cstime in ticks) for every process."""
    table = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        rest = s[s.rindex(")") + 2:].split()
        table[int(d)] = (int(rest[1]), sum(int(x) for x in rest[11:15]))  # ppid, u+s+cu+cs
    return table


def tree(root, table):
    """`root` and its descendants that are in `table`."""
    kids = {}
    for pid, (ppid, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        if p in table:
            out.append(p)
            todo.extend(kids.get(p, []))
    return out


def tree_cpu_ticks(root):
    """CPU time of `root` and its descendants (reaped children included), in ticks."""
    table = proc_table()
    return sum(table[p][1] for p in tree(root, table))


def tree_cpu_ms(root):
    """CPU time of `root` and its descendants (reaped children included), in ms."""
    return tree_cpu_ticks(root) * 1000 / TICK
