#!/usr/bin/env bash
# bench/journaled.sh [bench.py|tls-bench.py] [ARGS...]
#
# Runs a benchmark with both targets on a journaled ext4 (the default of mkfs.ext4 and
# of most servers) instead of the file system /var/tmp lives on. On ext4 *without* a
# journal (this project's benchmark machine) every file creation skips the inodes
# freed in the last 60-360 s (fs/ext4/ialloc.c, recently_deleted(), checked only when
# there is no journal), which slows a queue that creates and deletes a file per
# message (Postfix) from one repetition to the next; with a journal that cost is gone
# and each fsync is a journal commit instead. docs/benchmarks.md, "On a journaled
# file system", has the figures.
#
# As root, on a machine where nothing else uses Postfix: makes an image (JFS_IMAGE,
# default /var/tmp/sloop-jfs.img, JFS_SIZE_MIB, default 4096) written out in full
# first, so that no write of the benchmark has to allocate blocks of the image in the
# file system beneath it (each cache flush of the loop device is an fsync of the image
# file: on a sparse image every flush also commits those allocations, which charges
# the side that flushes more), formats it with mkfs.ext4's defaults (journal,
# data=ordered) but with the inode tables and the journal initialized at once (else
# ext4lazyinit zeroes them in the background for minutes, during the runs), attaches it
# with direct I/O (so its writes and flushes reach the disk as a partition's would,
# not through a second page cache),
# mounts it on JFS_MOUNT (default /mnt/sloop-jfs), bind-mounts a copy of Postfix's
# queue directory over /var/spool/postfix and an empty directory over the benchload
# user's home (its Maildir), runs bench/$1 with --work on the image, and undoes all
# of it on exit, whatever happens (Postfix stopped first). Default: bench.py
# --workloads 20:4096:1 --reps 7.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
image=${JFS_IMAGE:-/var/tmp/sloop-jfs.img}
mnt=${JFS_MOUNT:-/mnt/sloop-jfs}
script=${1:-bench.py}
shift || true
if (($# == 0)) && [ "$script" = bench.py ]; then
    set -- --workloads 20:4096:1 --reps 7
fi
case $script in
    bench.py) work=$mnt/sloop-bench ;;
    tls-bench.py) work=$mnt/sloop-tls-bench ;;
    *) echo "journaled.sh: bench.py or tls-bench.py, not '$script'" >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || { echo "journaled.sh: run as root" >&2; exit 2; }
spool=$(postconf -h queue_directory 2>/dev/null || echo /var/spool/postfix)
home=$(getent passwd benchload | cut -d: -f6)
[ -n "$home" ] || { echo "journaled.sh: no benchload user (run bench/$script once first)" >&2; exit 2; }

loop=
mounted=()
cleanup() {
    postfix stop >/dev/null 2>&1 || true
    # A benchmark killed by a signal leaves its Sloop running on the image: only the
    # benchmark uses this scratch mount, so whatever still does is stopped.
    if [ -n "$loop" ] && mountpoint -q "$mnt"; then
        fuser -k -TERM -m "$mnt" >/dev/null 2>&1 || true
        sleep 2
        fuser -k -KILL -m "$mnt" >/dev/null 2>&1 || true
    fi
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount "${mounted[i]}" || echo "journaled.sh: cannot unmount ${mounted[i]}" >&2
    done
    [ -z "$loop" ] || losetup -d "$loop" 2>/dev/null || true
    rm -f "$image"
}
trap cleanup EXIT

postfix stop >/dev/null 2>&1 || true
rm -f "$image"
size_mib=${JFS_SIZE_MIB:-4096}
dd if=/dev/zero of="$image" bs=1M count="$size_mib" conv=fsync status=none
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$image"
loop=$(losetup --find --show --direct-io=on "$image")
mkdir -p "$mnt"
mount "$loop" "$mnt"
mounted+=("$mnt")
cp -a "$spool" "$mnt/postfix-spool"
mount --bind "$mnt/postfix-spool" "$spool"
mounted+=("$spool")
mkdir "$mnt/benchload-home"
chown --reference="$home" "$mnt/benchload-home"
chmod --reference="$home" "$mnt/benchload-home"
mount --bind "$mnt/benchload-home" "$home"
mounted+=("$home")
echo "journaled.sh: $(findmnt -n -o SOURCE,FSTYPE,OPTIONS "$mnt"), journal: $(dumpe2fs -h "$loop" 2>/dev/null | grep -c '^Journal features')"
python3 "$here/$script" --work "$work" "$@"
