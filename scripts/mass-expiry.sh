#!/usr/bin/env bash
# A mass expiry, timed: MASS_ACCOUNTS (100000) members earn points that all expire at one
# time (marketing-bench earn-expiring), then the release server's own sweeper (every 5 s, on
# PostgreSQL + Redis) writes them off while deduct-spread runs. Prints how long the sweep took
# from the expiry (accounts a second), and deduct-spread's rate while it ran against runs just
# before the expiry and after the sweep (the request paths' loss). Reads the sweep's progress from
# `/metrics` (marketing_points_accounts_expired_total).
#   MASS_ACCOUNTS=100000  members whose points expire
#   MASS_DURING=20s       length of each deduct-spread run
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
case ${1:-} in -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
ACCOUNTS=${MASS_ACCOUNTS:-100000}
DURING=${MASS_DURING:-20s}
ADDR=127.0.0.1:50581
METRICS=127.0.0.1:9581
OUT=$ROOT/target/mass-expiry
mkdir -p "$OUT"
ensure_postgres
ensure_redis
drop_redis_keys 'mass*'
BASE=${MARKETING_TEST_DATABASE_URL%/*}
log "building the server and the bench (release)"
cargo build --release --locked -p marketing-server -p marketing-bench
fresh_database mk_mass_expiry
MARKETING_AUTH=disabled MARKETING_DATABASE_URL="$BASE/mk_mass_expiry" \
  MARKETING_REDIS_URL="$MARKETING_TEST_REDIS_URL" MARKETING_REDIS_KEY_PREFIX="mass:$(date +%s):" \
  MARKETING_GRPC_ADDR=$ADDR MARKETING_METRICS_ADDR=$METRICS RUST_LOG=warn \
  target/release/marketing-server >"$OUT/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
wait_for 60 "the server" env MARKETING_GRPC_ADDR=$ADDR target/release/marketing-server healthcheck
bench() { target/release/marketing-bench "$@" --addr $ADDR -c 64 -O json; }
expired() {
  curl -s "http://$METRICS/metrics" | grep -E '^marketing_points_accounts_expired_total ' | awk '{print $2}'
}

log "warm-up (earns expiring in a day, deductions), then ANALYZE"
bench earn-expiring -n 5000 --expire-at $(( $(date +%s) + 86400 )) --tenant warm -o "$OUT/warm-earn.json" >/dev/null
bench deduct-spread -z 3s -o "$OUT/warmup.json" >/dev/null
psql "$BASE/mk_mass_expiry" -qc ANALYZE >/dev/null
# The expiry leaves room for the earns (at half the warm-up's rate) and a baseline run.
rate=$(rps_of "$OUT/warm-earn.json")
during_s=${DURING%s}
expire_at=$(( $(date +%s) + $(echo "$ACCOUNTS * 2 / $rate" | bc) + during_s + 30 ))
log "earning points for $ACCOUNTS members, all expiring at $(date -d @$expire_at +%T)"
bench earn-expiring -n "$ACCOUNTS" --expire-at $expire_at --tenant mass -o "$OUT/earn.json" >/dev/null
log "earned at $(rps_of "$OUT/earn.json")/s; ANALYZE, then deduct-spread before the expiry"
psql "$BASE/mk_mass_expiry" -qc ANALYZE >/dev/null
bench deduct-spread -z "$DURING" -o "$OUT/before.json" >/dev/null
[ "$(date +%s)" -lt $expire_at ] || die "the expiry passed before the baseline ended (the earns were slower than planned)"
before=$(expired)
sleep $(( expire_at - $(date +%s) ))
log "expired at $(date +%T): deduct-spread while the sweeper works"
started=$(date +%s.%N)
bench deduct-spread -z "$DURING" -o "$OUT/during.json" >/dev/null &
during=$!
done_at=""
for _ in $(seq 1800); do
  now=$(expired)
  if [ -z "$done_at" ] && [ "$(( ${now%.*} - ${before%.*} ))" -ge "$ACCOUNTS" ]; then
    done_at=$(date +%s.%N)
  fi
  if [ -n "$done_at" ] && ! kill -0 $during 2>/dev/null; then break; fi
  sleep 0.2
done
wait $during
[ -n "$done_at" ] || die "the sweep did not finish within 6 minutes"
took=$(echo "$done_at - $started" | bc -l)
printf 'mass expiry: %d accounts swept in %.1f s (%.0f accounts/s, from the expiry time)\n' \
  "$ACCOUNTS" "$took" "$(echo "$ACCOUNTS / $took" | bc -l)"
bench deduct-spread -z "$DURING" -o "$OUT/after.json" >/dev/null
printf 'deduct-spread: %.0f/s before the expiry, %.0f/s while the sweeper worked, %.0f/s after (during / mean of the others: %.2fx)\n' \
  "$(rps_of "$OUT/before.json")" "$(rps_of "$OUT/during.json")" "$(rps_of "$OUT/after.json")" \
  "$(echo "2 * $(rps_of "$OUT/during.json") / ($(rps_of "$OUT/before.json") + $(rps_of "$OUT/after.json"))" | bc -l)"
