#!/bin/bash
# Counts the instructions a consumed message costs Bida, with valgrind's
# callgrind: counts that do not move with the machine's noise (CPU time
# does by ±10% from run to run), so that a change of a few percent in
# Bida's own work can be seen. Kernel time (sockets, wake-ups) and
# Postgres are not in them.
#
#   bench/profile/callgrind.sh BIDA_BINARY OUT_DIR [broker] [small] [large]
#
# Runs `bida-bench mq` twice with the node under callgrind, draining
# `small` (5,000) then `large` (20,000) messages, each with a paced phase
# of 1 s at 20 msgs/s: the difference between the two runs' totals,
# divided by the difference in messages, is a message's share (start-up,
# the paced phase and the stop cancel out; what timers do in the longer
# run's extra seconds does not). Prints it, and writes each
# run's profile to OUT_DIR/<messages>.out: a message's instructions by
# function with `bench/profile/callgrind_diff.py OUT_DIR/5000.out
# OUT_DIR/20000.out 15000 [--self]`. Counts are not time: a large copy
# (`rep movsb`) counts a byte an instruction, and the kernel is not in them.
# Under callgrind the node runs about 50 times slower: a run takes minutes.
set -euo pipefail
binary=$(realpath "$1")
out=$(realpath -m "$2")
broker=${3:-rabbitmq}
small=${4:-5000}
large=${5:-20000}
bench=${BENCH:-target/release/bida-bench}
mkdir -p "$out"

wrapper="$out/bida-under-callgrind"
cat >"$wrapper" <<EOF
#!/bin/bash
# Only the node (serve) is profiled; the bench's other commands run as they
# are. The bench kills the node before its rebuild, and callgrind writes its
# profile only on a clean exit: the node runs as a child that the kill of
# this script leaves running, stopped by callgrind.sh with SIGTERM.
if [ "\$1" = serve ]; then
    valgrind --tool=callgrind --callgrind-out-file="$out/run.%p.out" "$binary" "\$@" &
    echo \$! >"$out/node.pid"
    wait
    exit
fi
exec "$binary" "\$@"
EOF
chmod +x "$wrapper"

total() { awk '/^(summary|totals):/ {print $2; exit}' "$1"; }

for messages in "$small" "$large"; do
    rm -f "$out"/run.*.out
    BENCH_BIDA_BINARY=$wrapper "$bench" mq --broker "$broker" --concurrency 64 \
        --messages "$messages" --paced-seconds 1 --paced-rate 20 >"$out/$messages.log" 2>&1
    node=$(cat "$out/node.pid")
    kill -TERM "$node"
    while kill -0 "$node" 2>/dev/null; do sleep 1; done
    mv "$(ls -S "$out"/run.*.out | head -1)" "$out/$messages.out"
    echo "$messages messages: $(total "$out/$messages.out") instructions"
done

python3 "$(dirname "$0")/callgrind_diff.py" "$out/$small.out" "$out/$large.out" $((large - small)) --top 0
