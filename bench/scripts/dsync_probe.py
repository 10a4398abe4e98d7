#!/usr/bin/env python3
"""What one O_DIRECT|O_DSYNC append costs when it grows its file (`grow`), when the
file's blocks were allocated first (`falloc`: `posix_fallocate`, unwritten extents
converted as they are written) and when it overwrites blocks written and synced
beforehand (`over`): the device round trips a direct log pays per sync. Each writer
appends SIZE-byte blocks to its own file in DIR.

Usage: bench/scripts/dsync_probe.py grow|falloc|over COUNT SIZE WRITERS [DIR]
e.g.   bench/scripts/dsync_probe.py grow 2000 45056 3 /var/tmp

Prints each writer's p50/p90/p99 write latency and the CPU (user + system) per write.
Run it while nothing else writes to the disk. The files are removed at the end.
"""

import mmap
import os
import resource
import sys
import time


def writer(mode, count, size, path):
    if os.path.exists(path):
        os.unlink(path)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_DIRECT)
    block = mmap.mmap(-1, size)  # page-aligned, as O_DIRECT needs
    block.write(b"x" * size)
    if mode == "falloc":
        os.posix_fallocate(fd, 0, count * size)
        os.fsync(fd)
    if mode == "over":
        zeros = mmap.mmap(-1, 1 << 20)
        for i in range((count * size >> 20) + 2):
            os.pwrite(fd, zeros, i << 20)
        os.fdatasync(fd)
    os.close(fd)
    fd = os.open(path, os.O_WRONLY | os.O_DIRECT | os.O_DSYNC)
    latencies = []
    before = resource.getrusage(resource.RUSAGE_SELF)
    for i in range(count):
        start = time.perf_counter()
        os.pwrite(fd, block, i * size)
        latencies.append(time.perf_counter() - start)
    after = resource.getrusage(resource.RUSAGE_SELF)
    os.close(fd)
    os.unlink(path)
    latencies.sort()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(f"{os.path.basename(path)} {mode}: p50 {latencies[count // 2] * 1e3:.3f} "
          f"p90 {latencies[count * 9 // 10] * 1e3:.3f} p99 {latencies[count * 99 // 100] * 1e3:.3f} ms; "
          f"CPU per write {cpu / count * 1e6:.1f} us", flush=True)


def main():
    if len(sys.argv) < 5 or sys.argv[1] not in ("grow", "falloc", "over"):
        sys.exit(__doc__)
    mode, count, size, writers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    directory = sys.argv[5] if len(sys.argv) > 5 else "."
    children = []
    for n in range(writers):
        pid = os.fork()
        if pid == 0:
            writer(mode, count, size, os.path.join(directory, f"dsync-probe-{n}"))
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
