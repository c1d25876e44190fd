#!/bin/bash
# Profiles the drain phase of `bida-bench mq`: starts the bench, waits until
# the node under test is busy (its drain, not the bare pipe's), then records
# 8 s with perf.
#
#   bench/profile/drain.sh BIDA_BINARY OUT.data [bida|postgres|all] [broker]
#
# PACED_RATE=N profiles the paced phase instead, at N messages a second
# (a short drain of 20,000 first, then 40 s at that rate): what a message
# costs at a steady rate, where the drain shows it at its cheapest.
#
# bida: call graphs of the node (dwarf); postgres: call graphs of every
# postgres process; all: the whole machine, no call graphs (shares by
# process: `perf report -i OUT.data --sort comm`). Read the first two with
# `perf script -i OUT.data --no-inline -F comm,tid,ip,sym | bench/profile/shares.py bida`
# (or `postgres`). switches: counts (no samples) of the node's CPU time,
# context switches and thread migrations over the 8 s, into OUT (divide by
# the drain's rate times 8 for a message's share). The bench's own report
# goes to OUT.log.
set -euo pipefail
binary=$(realpath "$1")
out=$2
what=${3:-bida}
broker=${4:-rabbitmq}
bench=${BENCH:-target/release/bida-bench}
case $what in
    bida | postgres | all | switches) ;;
    *) echo "unknown mode $what: bida, postgres, all or switches" >&2; exit 2 ;;
esac

paced_rate=${PACED_RATE:-}
if [ -n "$paced_rate" ]; then
    phase=(--messages 20000 --paced-seconds 40 --paced-rate "$paced_rate")
else
    phase=(--messages 200000 --paced-seconds 3)
fi
BENCH_BIDA_BINARY=$binary "$bench" mq --broker "$broker" --concurrency 64 "${phase[@]}" >"$out.log" 2>&1 &
for _ in $(seq 600); do
    node=$(pgrep -f "^$binary serve" | head -1 || true)
    [ -n "$node" ] && break
    sleep 0.5
done
[ -n "$node" ] || { echo "the node did not start: see $out.log" >&2; exit 1; }
# The node idles while the bare pipe drains; its drain shows as > 0.6 CPU.
ticks() { awk '{print $14 + $15}' "/proc/$node/stat"; }
before=$(ticks)
while sleep 1; do
    now=$(ticks)
    [ $((now - before)) -gt 60 ] && break
    before=$now
done
if [ -n "$paced_rate" ]; then
    # The paced phase follows the drain of 20,000 (a few seconds) at once.
    sleep 12
else
    sleep 2
fi
case $what in
    bida) perf record -F 499 -g --call-graph dwarf,16384 -p "$node" -o "$out" -- sleep 8 ;;
    postgres) perf record -F 299 -g --call-graph dwarf,8192 -p "$(pgrep -d, postgres)" -o "$out" -- sleep 8 ;;
    all) perf record -a -F 999 -o "$out" -- sleep 8 ;;
    switches) perf stat -e task-clock,context-switches,cpu-migrations -p "$node" -o "$out" -- sleep 8 ;;
esac
wait
