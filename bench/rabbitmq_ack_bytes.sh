#!/usr/bin/env bash
# Acknowledgement traffic of Bida's RabbitMQ consumers (README, "Acknowledging
# RabbitMQ deliveries in runs"): runs a bench command, polls RabbitMQ's
# connection statistics every second meanwhile, and prints, for each Bida
# consumer connection, the bytes RabbitMQ received (acknowledgements, mostly)
# as a share of the bytes it sent (deliveries). One `basic.ack` is 21 bytes;
# a 512-byte message's delivery about 650.
#
#   bench/rabbitmq_ack_bytes.sh target/release/bida-bench mq --broker rabbitmq --messages 300000
set -euo pipefail
api="${RABBITMQ_API:-http://guest:guest@localhost:15672}"
polls="$(mktemp)"
trap 'rm -f "$polls"' EXIT
"$@" &
bench=$!
while kill -0 "$bench" 2>/dev/null; do
  curl -s "$api/api/connections?columns=client_properties.connection_name,recv_oct,send_oct" >>"$polls" || true
  echo >>"$polls"
  sleep 1
done
wait "$bench"
python3 - "$polls" <<'PY'
import json, sys
last = {}
for line in open(sys.argv[1]):
    try:
        connections = json.loads(line)
    except ValueError:
        continue
    for c in connections:
        name = (c.get("client_properties") or {}).get("connection_name") or ""
        if name.startswith("bida-") and c.get("recv_oct") is not None:
            if name not in last or c["send_oct"] >= last[name]["send_oct"]:
                last[name] = c
for name, c in last.items():
    share = 100 * c["recv_oct"] / max(1, c["send_oct"])
    print(f"{name}: received {c['recv_oct']} bytes, sent {c['send_oct']}: {share:.2f}%")
PY
