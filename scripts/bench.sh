#!/usr/bin/env bash
# The benchmark, in one go on this machine: every gRPC scenario against the server (release
# build) on PostgreSQL + Redis, each right after the bare database's ceiling it is compared
# with (pgbench), then the goal table with ratios (target/bench/report.md). Results of one run
# are comparable with each other, not with another machine's.
#   BENCH_DURATION=5s    length of each measured gRPC scenario
#   BENCH_PG_SECONDS=20  length of each pgbench run
#   BENCH_SERVER=path    the server binary to measure (default: this tree's release build);
#                        with BENCH_OUT, measures an older build beside this one
#   BENCH_OUT=dir        where the results go (default target/bench)
#   BENCH_AUTH=on|off    every call with an API client's key (on, the default: the server
#                        runs with MARKETING_AUTH=required; then get-template on two fresh
#                        replicas, one with auth and one open, in alternating rounds, for what
#                        auth costs),
#                        or an open server (off; for builds older than API clients)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

OUT=${BENCH_OUT:-$ROOT/target/bench}
SERVER_BIN=${BENCH_SERVER:-target/release/marketing-server}
DURATION=${BENCH_DURATION:-5s}
PG_SECONDS=${BENCH_PG_SECONDS:-20}
ADDR=127.0.0.1:50551
METRICS_ADDR=127.0.0.1:9551
AUTH=${BENCH_AUTH:-on}
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/rss_kb.txt

ensure_postgres
ensure_redis
drop_redis_keys 'bench*'
command -v pgbench >/dev/null 2>&1 || apt_install postgresql-contrib
BASE=${MARKETING_TEST_DATABASE_URL%/*}

log "building the server and the bench (release)"
cargo build --release --locked -p marketing-server -p marketing-bench

fresh_database mk_bench_pgbench
psql "$BASE/mk_bench_pgbench" -q -f scripts/pgbench/schema.sql >/dev/null
# Each goal compares a scenario with a pgbench ceiling. This machine's speed changes from
# minute to minute, so each ceiling is measured right before its scenario, not all of them
# minutes earlier. The scripts still run in the same order, on the same tables.
declare -A CEILING=([claim-hot]=hot_claim [deduct-spread]=spread_deduct
  [deduct-hot]=hot_update [list-coupons]=point_read)
declare -A TPS=()
ceiling() {
  local script=$1 tps
  tps=$(pgbench -n -c 16 -j 2 -T "$PG_SECONDS" -f "scripts/pgbench/$script.sql" "$BASE/mk_bench_pgbench" 2>/dev/null |
    awk '/^tps = / { print $3; exit }')
  log "database ceiling $script.sql (pgbench -c 16 -j 2 -T $PG_SECONDS): ${tps:-0} TPS"
  TPS[$script]=${tps:-0}
}

log "starting the server on PostgreSQL + Redis (auth $AUTH)"
fresh_database mk_bench_app
TOKEN=()
if [ "$AUTH" = on ]; then
  KEY=$(MARKETING_DATABASE_URL="$BASE/mk_bench_app" RUST_LOG=warn \
    "$SERVER_BIN" clients create --name bench --role admin --all-tenants | tail -n 1)
  TOKEN=(--token "$KEY")
  export MARKETING_AUTH=required
else
  export MARKETING_AUTH=disabled
fi
MARKETING_DATABASE_URL="$BASE/mk_bench_app" MARKETING_REDIS_URL="$MARKETING_TEST_REDIS_URL" \
  MARKETING_REDIS_KEY_PREFIX="bench:$(date +%s):" MARKETING_GRPC_ADDR=$ADDR \
  MARKETING_METRICS_ADDR=$METRICS_ADDR RUST_LOG=warn \
  "$SERVER_BIN" >"$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
wait_for 60 "the server" env MARKETING_GRPC_ADDR=$ADDR target/release/marketing-server healthcheck

SCENARIOS=("health 64" "get-template 64" "claim-hot 64" "claim-code 64" "price-order 64" "applicable-coupons 64" "generate-codes 64" "claim-sellout 64" "deduct-spread 64"
  "deduct-hot 32" "list-coupons 64" "mixed 64")
# A short pass first fills the tables; ANALYZE then gives PostgreSQL the statistics a
# production database has (on empty, unanalyzed tables it plans badly and the first runs
# measure that instead: deduct-spread ran at a third of its speed).
log "warm-up pass (2s each), then ANALYZE"
for run in "${SCENARIOS[@]}"; do
  set -- $run
  # Nothing to fill for these (health reads no table; claim-sellout's table is claim-hot's).
  case $1 in health | get-template | claim-sellout | generate-codes) continue ;; esac
  target/release/marketing-bench "$1" --addr $ADDR -c "$2" -z 2s -O json -o "$OUT/warmup-$1.json" "${TOKEN[@]}"
done
psql "$BASE/mk_bench_app" -qc "ANALYZE" >/dev/null
for run in "${SCENARIOS[@]}"; do
  set -- $run
  if [ -n "${CEILING[$1]:-}" ]; then ceiling "${CEILING[$1]}"; fi
  log "scenario $1, c=$2, $DURATION"
  target/release/marketing-bench "$1" --addr $ADDR -c "$2" -z "$DURATION" -O json -o "$OUT/$1.json" "${TOKEN[@]}"
done
printf '{' >"$OUT/pgbench.json"
separator=""
for script in hot_claim spread_deduct hot_update point_read; do
  printf '%s"%s": %s' "$separator" "$script" "${TPS[$script]:-0}" >>"$OUT/pgbench.json"
  separator=", "
done
printf '}\n' >>"$OUT/pgbench.json"
awk '/VmHWM/ { print $2 }' "/proc/$SERVER/status" >"$OUT/rss_kb.txt"
# What the server's /metrics showed at the end of the run.
curl -fsS "http://$METRICS_ADDR/metrics" >"$OUT/metrics.txt" || log "could not read /metrics"
kill $SERVER
wait $SERVER 2>/dev/null || true
trap - EXIT

# What auth costs: get-template on two fresh replicas of this build on the same database and
# Redis, one serving with auth (and called with the key), one open, in rounds of alternating
# order (only one of the two is loaded at a time), compared round by round.
if [ "$AUTH" = on ]; then
  OPEN_ADDR=127.0.0.1:50552
  declare -A SIDE_ADDR=([keyed]=$ADDR [open]=$OPEN_ADDR)
  declare -A SIDE_AUTH=([keyed]=required [open]=disabled)
  declare -A SIDE_PID=()
  for side in keyed open; do
    MARKETING_AUTH=${SIDE_AUTH[$side]} MARKETING_DATABASE_URL="$BASE/mk_bench_app" \
      MARKETING_REDIS_URL="$MARKETING_TEST_REDIS_URL" \
      MARKETING_REDIS_KEY_PREFIX="bench-$side:$(date +%s):" MARKETING_GRPC_ADDR=${SIDE_ADDR[$side]} \
      MARKETING_METRICS_ADDR= \
      RUST_LOG=warn "$SERVER_BIN" >"$OUT/server-$side.log" 2>&1 &
    SIDE_PID[$side]=$!
  done
  trap 'kill ${SIDE_PID[keyed]} ${SIDE_PID[open]} 2>/dev/null || true' EXIT
  for side in keyed open; do
    wait_for 60 "the $side server" env MARKETING_GRPC_ADDR=${SIDE_ADDR[$side]} \
      target/release/marketing-server healthcheck
  done
  side_token() { if [ "$1" = keyed ]; then printf '%s\n' "${TOKEN[@]}"; fi; }
  for side in keyed open; do
    mapfile -t side_args < <(side_token $side)
    target/release/marketing-bench get-template --addr ${SIDE_ADDR[$side]} -c 64 -z 2s -O json \
      -o "$OUT/warmup-auth-$side.json" "${side_args[@]}"
  done
  for round in 1 2 3 4; do
    order="keyed open"
    if [ $((round % 2)) = 0 ]; then order="open keyed"; fi
    for side in $order; do
      log "auth cost, round $round: get-template $side, c=64, $DURATION"
      mapfile -t side_args < <(side_token $side)
      target/release/marketing-bench get-template --addr ${SIDE_ADDR[$side]} -c 64 -z "$DURATION" \
        -O json -o "$OUT/auth-$round-$side.json" "${side_args[@]}"
    done
  done
  kill ${SIDE_PID[keyed]} ${SIDE_PID[open]}
  wait ${SIDE_PID[keyed]} ${SIDE_PID[open]} 2>/dev/null || true
  trap - EXIT
fi

log "report (also in target/bench/report.md)"
target/release/marketing-bench report --dir "$OUT" | tee "$OUT/report.md"
