#!/usr/bin/env python3
"""Shares of a profile's samples by what they were doing.

Reads `perf script --no-inline -F comm,tid,ip,sym` (call graphs) on stdin.
A sample counts for the first category, in the order below, that any frame
of its stack matches: a delivery's write to Postgres counts as the writer,
not as the delivery waiting for it. `bida` also splits the samples by thread.

    perf script -i OUT.data --no-inline -F comm,tid,ip,sym | bench/profile/shares.py bida
"""
import collections
import re
import sys

BIDA = [
    ("task-list projection", r"bida_projections::"),
    ("group-commit writer", r"bida_store::postgres::writer"),
    ("recording (events to JSON, append)", r"Pipeline::record"),
    ("HTTP attempt (request, reqwest, timeout)", r"NodeContext::attempt"),
    ("hyper connection tasks (socket I/O)", r"hyper::proto::h1::dispatch|UpgradeableConnection"),
    ("delivery, the rest (spec, acknowledgement, slot)", r"Pipeline::deliver"),
    ("consumer pump", r"consumer::pump"),
    ("consumer actor (reads the source)", r"consumer::actor"),
    ("MQ client (lapin, rdkafka, ...)", r"lapin::|amq_protocol|rdkafka|rskafka"),
    ("sqlx, other", r"sqlx"),
    ("runtime idle (park, epoll)", r"park|epoll_wait"),
]

POSTGRES = [
    ("index inserts", r"^ExecInsertIndexTuples$|^btinsert$"),
    ("heap inserts", r"^heap_insert$|^heap_multi_insert$"),
    ("JSON input", r"^json_in$|^jsonb_in$"),
    ("commit (WAL flush)", r"^CommitTransactionCommand$|^XLogFlush$"),
    ("index reads", r"^index_getnext_slot$|^btgettuple$"),
    ("plan", r"^standard_planner$|^pg_plan_queries$"),
    ("executor, the rest", r"^standard_ExecutorRun$|^PortalRun$"),
    ("protocol, waits", r"^secure_read$|^secure_write$|^WaitEventSetWait$|^pq_getbyte$"),
]


def samples(lines):
    sample = None
    for line in lines:
        if not line.strip():
            if sample:
                yield sample
            sample = None
        elif not line[0].isspace():
            sample = {"thread": line.split()[0], "frames": []}
        elif sample is not None:
            parts = line.strip().split(None, 1)
            if len(parts) == 2:
                sample["frames"].append(re.sub(r"::h[0-9a-f]{16}$", "", parts[1]))
    if sample:
        yield sample


def main():
    kind = sys.argv[1] if len(sys.argv) > 1 else "bida"
    categories = [(name, re.compile(p)) for name, p in (BIDA if kind == "bida" else POSTGRES)]
    totals, by_thread = collections.Counter(), collections.defaultdict(collections.Counter)
    n = 0
    for sample in samples(sys.stdin):
        n += 1
        name = next(
            (name for name, p in categories if any(p.search(f) for f in sample["frames"])),
            "other (kernel, runtime, allocator)",
        )
        totals[name] += 1
        by_thread[sample["thread"]][name] += 1
    if not n:
        sys.exit("no samples")
    print(f"{n} samples")
    for name, count in totals.most_common():
        print(f"{100 * count / n:5.1f}%  {name}")
    if kind == "bida":
        print("\nby thread:")
        for thread, counts in sorted(by_thread.items(), key=lambda t: -sum(t[1].values())):
            top = ", ".join(f"{name} {100 * c / n:.1f}" for name, c in counts.most_common(4))
            print(f"{100 * sum(counts.values()) / n:5.1f}%  {thread}: {top}")


if __name__ == "__main__":
    main()
