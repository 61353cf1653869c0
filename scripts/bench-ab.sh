#!/usr/bin/env bash
# Side by side: two server builds (A, B) on PostgreSQL + Redis, each on its own fresh database,
# both running, and each scenario measured on A and B in alternating rounds (A B B A ...), so
# the machine's slow minutes fall on both. Prints every round and the median ratio B/A.
#   scripts/bench-ab.sh A_BINARY B_BINARY [SCENARIO ...]   (default: deduct-spread mixed)
#   BENCH_DURATION=5s  length of each measured run
#   BENCH_ROUNDS=4     rounds per scenario (each round runs A and B once)
# Calls are open (MARKETING_AUTH=disabled): scripts/bench.sh measures what auth costs.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; }
case ${1:-} in -h | --help | "") usage; exit 0 ;; esac
[ $# -ge 2 ] || { usage; exit 2; }
declare -A BIN=([A]=$1 [B]=$2)
shift 2
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(deduct-spread mixed)
DURATION=${BENCH_DURATION:-5s}
ROUNDS=${BENCH_ROUNDS:-4}
declare -A ADDR=([A]=127.0.0.1:50561 [B]=127.0.0.1:50562)
OUT=$ROOT/target/bench-ab
mkdir -p "$OUT"

ensure_postgres
ensure_redis
drop_redis_keys 'bench*'
BASE=${MARKETING_TEST_DATABASE_URL%/*}
log "building the bench (release)"
cargo build --release --locked -p marketing-bench -p marketing-server

declare -A PID=()
trap 'kill ${PID[A]:-} ${PID[B]:-} 2>/dev/null || true' EXIT
for side in A B; do
  db=mk_bench_ab_${side,,}
  fresh_database "$db"
  MARKETING_AUTH=disabled MARKETING_DATABASE_URL="$BASE/$db" \
    MARKETING_REDIS_URL="$MARKETING_TEST_REDIS_URL" \
    MARKETING_REDIS_KEY_PREFIX="bench-ab-$side:$(date +%s):" MARKETING_GRPC_ADDR=${ADDR[$side]} \
    MARKETING_METRICS_ADDR= RUST_LOG=warn "${BIN[$side]}" >"$OUT/server-$side.log" 2>&1 &
  PID[$side]=$!
done
for side in A B; do
  wait_for 60 "server $side" env MARKETING_GRPC_ADDR=${ADDR[$side]} \
    target/release/marketing-server healthcheck
done

run() { # side scenario seconds output
  target/release/marketing-bench "$2" --addr "${ADDR[$1]}" -c 64 -z "$3" -O json -o "$4" >/dev/null
  rps_of "$4"
}

log "warm-up (2s of each scenario on each side), then ANALYZE"
for side in A B; do
  for scenario in "${SCENARIOS[@]}"; do run $side "$scenario" 2s "$OUT/warmup.json" >/dev/null; done
  psql "$BASE/mk_bench_ab_${side,,}" -qc ANALYZE >/dev/null
done

for scenario in "${SCENARIOS[@]}"; do
  ratios=()
  for round in $(seq "$ROUNDS"); do
    order="A B"
    if [ $((round % 2)) = 0 ]; then order="B A"; fi
    declare -A RPS=()
    for side in $order; do
      RPS[$side]=$(run $side "$scenario" "$DURATION" "$OUT/$scenario-$round-$side.json")
    done
    ratio=$(awk -v a="${RPS[A]}" -v b="${RPS[B]}" 'BEGIN { printf "%.3f", b / a }')
    ratios+=("$ratio")
    printf '%s round %s: A %.0f/s, B %.0f/s, B/A %s\n' "$scenario" "$round" "${RPS[A]}" "${RPS[B]}" "$ratio"
  done
  median=$(printf '%s\n' "${ratios[@]}" | sort -n |
    awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
  printf '%s: median B/A %s over %s rounds\n' "$scenario" "$median" "$ROUNDS"
done
