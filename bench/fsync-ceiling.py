#!/usr/bin/env python3
"""The disk's commit ceiling: create+write(4 KiB)+fsync+rename+fsync(dir) cycles per
second in DIR (default /var/tmp), on 1 and on N threads, for --seconds each."""
import os
import sys
import threading
import time


def worker(d, stop, counts, i):
    tmp, new = os.path.join(d, "tmp"), os.path.join(d, "new")
    n = 0
    data = b"x" * 4096
    while not stop.is_set():
        name = f"{i}-{n}"
        fd = os.open(os.path.join(tmp, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        os.rename(os.path.join(tmp, name), os.path.join(new, name))
        dfd = os.open(new, os.O_RDONLY)
        os.fsync(dfd)
        os.close(dfd)
        os.unlink(os.path.join(new, name))
        n += 1
    counts[i] = n


def run(d, threads, seconds):
    stop, counts = threading.Event(), [0] * threads
    ts = [threading.Thread(target=worker, args=(d, stop, counts, i)) for i in range(threads)]
    for t in ts:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in ts:
        t.join()
    return sum(counts) / seconds


def main():
    base = sys.argv[1] if len(sys.argv) > 1 else "/var/tmp"
    seconds = 5
    d = os.path.join(base, f"fsync-ceiling-{os.getpid()}")
    os.makedirs(os.path.join(d, "tmp"))
    os.makedirs(os.path.join(d, "new"))
    try:
        for n in (1, 4, 16):
            print(f"threads={n} cycles_per_s={run(d, n, seconds):.0f}")
    finally:
        for sub in ("tmp", "new"):
            for f in os.listdir(os.path.join(d, sub)):
                os.unlink(os.path.join(d, sub, f))
            os.rmdir(os.path.join(d, sub))
        os.rmdir(d)


if __name__ == "__main__":
    main()
