#!/usr/bin/env bash
# Times the console's task list and search on a large store (README,
# "Console"): five runs of each request through a logged-in session.
#
#   createdb bida_million && bida migrate --database-url postgres://localhost/bida_million
#   psql -d bida_million -f bench/sql/million_tasks.sql
#   bench/console_search.sh postgres://localhost/bida_million [path/to/bida]
set -euo pipefail
db="${1:?database URL}"
bida="${2:-target/release/bida}"
port=18099
jar="$(mktemp)"
RUST_LOG=warn "$bida" serve --listen "127.0.0.1:$port" --database-url "$db" >/dev/null 2>&1 &
server=$!
trap 'kill $server; rm -f "$jar"' EXIT
for _ in $(seq 120); do curl -sf "localhost:$port/readyz" >/dev/null && break; sleep 0.5; done
password="bench-password-$RANDOM$RANDOM"
echo "$password" | "$bida" users create --username "bench$RANDOM" --role viewer --database-url "$db" 2>&1 |
  sed -n 's/created the console user \(.*\) (viewer)/\1/p' >"$jar.user"
curl -s -c "$jar" -o /dev/null -d "username=$(cat "$jar.user")&password=$password" "localhost:$port/login"
id=$(psql "$db" -Atc "SELECT id FROM task_view ORDER BY created_at DESC OFFSET 5000 LIMIT 1")
body=$(psql "$db" -Atc "SELECT payload->'TaskSubmitted'->'spec'->'request'->'body'->>'text' FROM events WHERE aggregate_id = '$id' AND sequence = 1")
encoded=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$body")
day=$(date -u -d '4 days ago' +%F)
next=$(date -u -d '3 days ago' +%F)
for request in "/tasks" "/tasks?status=dead&app=app-10" "/tasks?status=dead&created_after=$day&created_before=$next" \
               "/tasks?q=$id" "/tasks?q=$encoded" "/tasks?q=no+such+text+anywhere" "/tasks?status=dead&app=app-3" \
               "/tasks?endpoint_host=hook-7.example.com" "/tasks?status=dead&endpoint_host=hook-10.example.com" \
               "/tasks?status=dead&endpoint_host=hook-7.example.com" \
               "/tasks?endpoint_host=rare.example.com" "/tasks?endpoint_host=nowhere.example.com"; do
  times=()
  for _ in 1 2 3 4 5; do
    times+=("$(curl -s -b "$jar" -o /dev/null -w '%{time_total}' "localhost:$port$request")")
  done
  printf '%-70s %s s\n' "$request" "${times[*]}"
done
rm -f "$jar.user"
