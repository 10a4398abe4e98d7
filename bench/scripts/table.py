#!/usr/bin/env python3
"""Runs every benchmark behind the README's performance table three times and prints
the median run of each (by throughput, or by p50 latency for latency rows), with the
command that produced it.
Usage: bench/scripts/table.py [path/to/strait-bench] [runs] [rows, e.g. 1,5]

The half-rate rows (4, 15 and 16) run at half the records/s of row 1's median run when row 1
is in the same set; otherwise at $HALF_RATE records/s (default 100,000).

Build first: cargo build --release -p strait-broker -p strait-bench
"""

import json
import os
import subprocess
import sys

BENCH = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.environ.get("CARGO_TARGET_DIR", "target"), "release", "strait-bench")
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
ONLY = {int(i) for i in sys.argv[3].split(",")} if len(sys.argv) > 3 else None

ROWS = [
    ("1 KiB records, unlimited rate",
     "produce --local 3 --topic t1k --duration 10 --record-size 1024 --in-flight 4000 --limits",
     "throughput"),
    ("100 B records, unlimited rate",
     "produce --local 3 --topic t100 --duration 10 --record-size 100 --in-flight 20000",
     "throughput"),
    ("one record in flight",
     "produce --local 3 --topic one --records 3000 --in-flight 1 --linger-ms 0",
     "latency"),
    ("half the 1 KiB maximum rate, with a consumer, every record timed",
     "e2e --local 3 --topic half --duration 10 --rate {half} --in-flight 10000 --linger-ms 1",
     "latency"),
    ("2 GB backlog read from the start",
     "consume --local 3 --topic backlog --fill-records 2000000 --record-size 1024 --in-flight 4000",
     "throughput"),
    ("1,000 partitions, idle",
     "idle --local 3 --topic many --partitions 1000 --seconds 20",
     "cpu"),
    ("1,000 partitions, 1 KiB records",
     "produce --local 3 --topic many --partitions 1000 --duration 10 --record-size 1024 --in-flight 4000",
     "throughput"),
    ("1 KiB records (log lines), lz4",
     "produce --local 3 --topic lz4 --duration 10 --record-size 1024 --in-flight 4000 --compression lz4",
     "throughput"),
    ("1 KiB records (log lines), zstd",
     "produce --local 3 --topic zstd --duration 10 --record-size 1024 --in-flight 4000 --compression zstd",
     "throughput"),
    ("2 GB backlog of lz4 batches read from the start",
     "consume --local 3 --topic backlog --fill-records 2000000 --record-size 1024 --in-flight 4000 --compression lz4",
     "throughput"),
    ("1 KiB records, 60 s",
     "produce --local 3 --topic t1k --duration 60 --record-size 1024 --in-flight 4000 --limits",
     "throughput"),
    ("1 KiB records, 2 partitions, 30 s (baseline of the next row)",
     "produce --local 3 --topic kill --partitions 2 --duration 30 --record-size 1024 --in-flight 4000",
     "throughput"),
    ("1 KiB records, 2 partitions, a follower killed at 10 s and restarted at 20 s",
     "produce --local 3 --topic kill --partitions 2 --duration 30 --record-size 1024 --in-flight 4000 --kill-follower-after 10 --restart-after 10",
     "throughput"),
    ("1 KiB records, 3 partitions, a leader killed at 10 s and restarted at 20 s",
     "produce --local 3 --topic kill --duration 30 --record-size 1024 --in-flight 4000 --kill-follower-after 10 --restart-after 10",
     "throughput"),
    ("half the 1 KiB maximum rate, with a consumer, after a 2 s warm-up (not timed)",
     "e2e --local 3 --topic half --duration 10 --warmup 2 --rate {half} --in-flight 10000 --linger-ms 1",
     "latency"),
    ("the same with a 2 ms linger (fewer, larger batches)",
     "e2e --local 3 --topic half --duration 10 --warmup 2 --rate {half} --in-flight 10000 --linger-ms 2",
     "latency"),
]


def run(args):
    out = subprocess.run([BENCH, *args.split(), "--json"], capture_output=True, text=True,
                         timeout=900)
    if out.returncode != 0:
        sys.exit(f"{args}: failed\n{out.stderr[-2000:]}")
    return json.loads(out.stdout)


def key(kind, report):
    if kind == "latency":
        return report["ack_latency_ms"]["p50"]
    if kind == "cpu":
        return max(b["cpu_percent"] for b in report["brokers"])
    return report["mb_per_sec"]


def summary(report):
    parts = [f'{report["records_per_sec"]:.0f} records/s, {report["mb_per_sec"]:.1f} MB/s']
    for name in ("ack_latency_ms", "e2e_latency_ms"):
        p = report.get(name)
        if p:
            label = "ack" if name.startswith("ack") else "e2e"
            parts.append(f'{label} p50 {p["p50"]:.2f} / p99 {p["p99"]:.2f} / max {p["max"]:.2f} ms')
    if report.get("brokers"):
        parts.append("brokers " + ", ".join(
            f'{b["cpu_percent"]:.0f}% CPU {b["rss_mib"]:.0f} MiB' for b in report["brokers"]))
    cpu = report.get("cpu")
    if cpu:
        parts.append(f'machine {cpu["busy_percent"]:.0f}% busy, benchmark {cpu["bench_percent"]:.0f}% of a core')
    stalls = report.get("disk_stalls")
    if stalls:
        parts.append(f'longest disk stall {stalls["longest_ms"]:.0f} ms')
    limits = report.get("limits")
    if limits:
        disk = limits["disk_write_fdatasync_mb_per_sec"]
        rf = max(report.get("replication_factor") or 1, 1)
        mb = report["mb_per_sec"]
        part = f'disk {disk:.0f} MB/s with O_DIRECT (produce = {100 * mb / (disk / rf):.0f}% of it/RF)'
        cached = limits.get("page_cache_write_fdatasync_mb_per_sec")
        if cached:
            part += f', {cached:.0f} MB/s through the page cache ({100 * mb / (cached / rf):.0f}%/RF)'
        parts.append(part + f', loopback {limits["loopback_tcp_mb_per_sec"]:.0f} MB/s, '
                     f'memcpy {limits["memcpy_mb_per_sec"]:.0f} MB/s')
    return "; ".join(parts)


# Half the maximum rate: half the records/s of row 1's median run when row 1 runs in
# this set, else $HALF_RATE (records/s), else 100,000.
half = int(os.environ.get("HALF_RATE", "100000"))
half_from = "HALF_RATE" if "HALF_RATE" in os.environ else "default"
for row, (title, args, kind) in enumerate(ROWS, start=1):
    if ONLY and row not in ONLY:
        continue
    if "{half}" in args:
        args = args.format(half=half)
        title += f" ({half:,} records/s: {half_from})"
    reports = sorted((run(args) for _ in range(RUNS)), key=lambda r: key(kind, r))
    median = reports[len(reports) // 2]
    if row == 1:
        half = round(median["records_per_sec"] / 2000) * 1000
        half_from = "half of row 1's median"
    if kind == "latency":
        # p50 and p99 of every run: a latency row's target is on both.
        spread = ", ".join(f'{r["ack_latency_ms"]["p50"]:.2f}/{r["ack_latency_ms"]["p99"]:.2f}'
                           for r in reports)
    else:
        spread = ", ".join(f"{key(kind, r):.1f}" for r in reports)
    print(f"| {title} | {summary(median)} | runs: {spread} | `strait-bench {args}` |", flush=True)
