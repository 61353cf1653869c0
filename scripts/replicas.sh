#!/usr/bin/env bash
# Several replicas on one PostgreSQL and one Redis (release builds, calls open): claim-hot and
# deduct-spread against one replica and against all of them at once (the bench spreads its
# connections over `--addr a,b,...`), in alternating rounds; then a sell-out against all of
# them, checked to claim exactly the stock, and the ledger checked: every account's balance
# is what its totals say, and the deductions answered OK are exactly the points spent.
#   REPLICAS=4          replicas started
#   BENCH_DURATION=5s   length of each run
#   BENCH_ROUNDS=3      rounds (one replica, then all, or the other way round)
#   SCENARIOS="claim-hot deduct-spread"  the scenarios compared
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
case ${1:-} in -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
REPLICAS=${REPLICAS:-4}
DURATION=${BENCH_DURATION:-5s}
ROUNDS=${BENCH_ROUNDS:-3}
OUT=$ROOT/target/replicas
mkdir -p "$OUT"
ensure_postgres
ensure_redis
drop_redis_keys 'replicas*'
BASE=${MARKETING_TEST_DATABASE_URL%/*}
DB=$BASE/mk_replicas
log "building the server and the bench (release)"
cargo build --release --locked -p marketing-server -p marketing-bench
fresh_database mk_replicas
prefix="replicas:$(date +%s):"
pids=()
addrs=()
trap 'kill ${pids[*]} 2>/dev/null || true' EXIT
for n in $(seq "$REPLICAS"); do
  addr=127.0.0.1:$((50590 + n))
  # One at a time: the first migrates the database.
  MARKETING_AUTH=disabled MARKETING_DATABASE_URL="$DB" MARKETING_REDIS_URL="$MARKETING_TEST_REDIS_URL" \
    MARKETING_REDIS_KEY_PREFIX="$prefix" MARKETING_GRPC_ADDR=$addr MARKETING_METRICS_ADDR=127.0.0.1:$((9590 + n)) \
    MARKETING_REPLICA_ID=replica-$n RUST_LOG=warn \
    target/release/marketing-server >"$OUT/server-$n.log" 2>&1 &
  pids+=($!)
  addrs+=("$addr")
  wait_for 60 "replica $n" env MARKETING_GRPC_ADDR=$addr target/release/marketing-server healthcheck
done
all=$(IFS=,; echo "${addrs[*]}")
run() { # addrs scenario duration output [extra...]
  local addr=$1 scenario=$2 duration=$3 output=$4
  shift 4
  target/release/marketing-bench "$scenario" --addr "$addr" -c 64 --connections "$REPLICAS" \
    -z "$duration" -O json -o "$output" "$@" >/dev/null
  rps_of "$output"
}
log "warm-up (2s of each scenario), then ANALYZE"
for scenario in claim-hot deduct-spread; do run "$all" $scenario 2s "$OUT/warmup.json" >/dev/null; done
psql "$DB" -qc ANALYZE >/dev/null

deducted=0
for scenario in ${SCENARIOS:-claim-hot deduct-spread}; do
  ratios=()
  for round in $(seq "$ROUNDS"); do
    order="one all"
    if [ $((round % 2)) = 0 ]; then order="all one"; fi
    for side in $order; do
      addr=${addrs[0]}
      [ $side = all ] && addr=$all
      rps=$(run "$addr" $scenario "$DURATION" "$OUT/$scenario-$side-$round.json" --tenant "replicas-$scenario-$side-$round")
      eval "rps_$side=$rps"
      if [ $scenario = deduct-spread ]; then
        ok=$(grep -oE '"OK": *[0-9]+' "$OUT/$scenario-$side-$round.json" | head -n 1 | grep -oE '[0-9]+$')
        deducted=$((deducted + ok))
      fi
    done
    ratio=$(echo "$rps_all / $rps_one" | bc -l)
    ratios+=("$ratio")
    printf '%s round %d: one replica %.0f/s, %d replicas %.0f/s (%.2fx)\n' \
      $scenario "$round" "$rps_one" "$REPLICAS" "$rps_all" "$ratio"
  done
  median=$(printf '%s\n' "${ratios[@]}" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}')
  printf '%s: %d replicas / one, median of %d rounds: %.2fx\n' $scenario "$REPLICAS" "$ROUNDS" "$median"
done

log "claims per batch on each replica (all runs)"
for n in $(seq "$REPLICAS"); do
  metrics=$(curl -s "http://127.0.0.1:$((9590 + n))/metrics")
  batches=$(echo "$metrics" | awk '$1 == "marketing_claim_batches_total" {print $2}')
  claims=$(echo "$metrics" | awk '$1 == "marketing_claims_batched_total" {print $2}')
  wait_sum=$(echo "$metrics" | awk '$1 == "marketing_claim_lock_wait_seconds_sum" {print $2}')
  printf 'replica %d: %s batches, %s claims (%.1f a batch), %.1f s waiting for the lock\n' \
    "$n" "${batches:-0}" "${claims:-0}" "$(echo "${claims:-0} / (${batches:-0} + 0.0001)" | bc -l)" "${wait_sum:-0}"
done

log "a sell-out against every replica at once"
run "$all" claim-sellout 10s "$OUT/claim-sellout.json" >/dev/null
grep -q '"verified": *true' "$OUT/claim-sellout.json" \
  || die "the sell-out did not claim exactly the stock: $(grep -oE '"(granted|claimed_count|remaining_stock)": *[0-9]+' "$OUT/claim-sellout.json" | tr '\n' ' ')"
echo "claim-sellout on $REPLICAS replicas: exactly the stock claimed ($(grep -oE '"granted": *[0-9]+' "$OUT/claim-sellout.json"))"

log "the ledger"
broken=$(psql "$DB" -qAtc "SELECT count(*) FROM points_accounts
  WHERE available + frozen <> total_earned - total_spent - total_expired + total_refunded
     OR available < 0 OR frozen < 0")
spent=$(psql "$DB" -qAtc "SELECT coalesce(sum(total_spent), 0) FROM points_accounts
  WHERE tenant_id LIKE 'replicas-deduct-spread-%'")
[ "$broken" = 0 ] || die "$broken accounts whose balance is not what their totals say"
[ "$spent" = "$deducted" ] || die "$deducted deductions answered OK, but $spent points spent"
echo "ledger: every balance is what its totals say; $deducted deductions answered OK, $spent points spent"
