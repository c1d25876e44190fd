#!/bin/bash
# What a look at a RabbitMQ broker costs the node: starts BIDA_BINARY on a
# fresh database, registers the local RabbitMQ (with its management API),
# views it once, then times VIEWS more `GET /v1/brokers/{id}` (each asks
# the broker: a connection, its queues, the management API's overview) and
# reads the node's CPU over them.
#
#   bench/broker_view.sh BIDA_BINARY [VIEWS]
set -euo pipefail
binary=$(realpath "$1")
views=${2:-20}
key=bida_bench_admin_key_for_benchmarks_only
db=bida_broker_view_$$
port=$((20000 + RANDOM % 20000))
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $db" >/dev/null
: >"/tmp/$db.toml"
RUST_LOG=warn BIDA_AUTH__BOOTSTRAP_ADMIN_KEY=$key "$binary" serve --config "/tmp/$db.toml" \
    --listen "127.0.0.1:$port" --grpc-listen "127.0.0.1:$((port + 1))" \
    --database-url "postgres://127.0.0.1:5432/$db" >"/tmp/$db.log" 2>&1 &
node=$!
cleanup() {
    kill "$node" 2>/dev/null && wait "$node" 2>/dev/null || true
    psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
    rm -f "/tmp/$db.toml" "/tmp/$db.log"
}
trap cleanup EXIT
for _ in $(seq 150); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
auth="Authorization: Bearer $key"
broker=$(curl -sf -H "$auth" -H 'content-type: application/json' \
    -d '{"name":"view","kind":"rabbitmq","url":"amqp://guest:guest@127.0.0.1:5672/%2f","management_url":"http://guest:guest@127.0.0.1:15672"}' \
    "http://127.0.0.1:$port/v1/brokers" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
curl -sf -o /dev/null -H "$auth" "http://127.0.0.1:$port/v1/brokers/$broker"
ticks() { awk '{print $14 + $15}' "/proc/$node/stat"; }
before=$(ticks)
times=$(for _ in $(seq "$views"); do
    curl -sf -o /dev/null -w '%{time_total}\n' -H "$auth" "http://127.0.0.1:$port/v1/brokers/$broker"
done | sort -n)
after=$(ticks)
hz=$(getconf CLK_TCK)
echo "$times" | awk -v n="$views" -v cpu=$((after - before)) -v hz="$hz" '{t[NR] = $1}
    END {printf "%d views: p50 %.1f ms, max %.1f ms; node CPU %.1f ms a view\n", n, t[int(NR / 2) + 1] * 1000, t[NR] * 1000, cpu * 1000 / hz / n}'
