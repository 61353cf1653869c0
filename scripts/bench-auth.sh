#!/usr/bin/env bash
# What auth costs: get-template on one release build served with MARKETING_AUTH=required and
# a key on every call ("on") against MARKETING_AUTH=disabled and no key ("off"), rounds in
# alternating order, a fresh database each time; prints the on/off ratio of every round and
# their median. BENCH_ROUNDS (4) rounds, BENCH_DURATION (5s) each.
# BENCH_COMPARE=limits compares instead a keyed server whose client calls are rate-limited
# (MARKETING_RATE_LIMITS=client=..., high enough never to refuse: one Redis script per call)
# ("on") with the same keyed server without limits ("off"): what a client limit costs.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
ensure_postgres
ensure_redis
ROUNDS=${BENCH_ROUNDS:-4}
DURATION=${BENCH_DURATION:-5s}
COMPARE=${BENCH_COMPARE:-auth}
OUT=$ROOT/target/bench-auth
ADDR=127.0.0.1:50561
BASE=${MARKETING_TEST_DATABASE_URL%/*}
rm -rf "$OUT" && mkdir -p "$OUT"
log "building the server and the bench (release)"
cargo build --release --locked -p marketing-server -p marketing-bench
for round in $(seq "$ROUNDS"); do
  order="on off"
  if [ $((round % 2)) = 0 ]; then order="off on"; fi
  for auth in $order; do
    psql "$MARKETING_TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS mk_bench_auth WITH (FORCE)" >/dev/null
    psql "$MARKETING_TEST_DATABASE_URL" -qc "CREATE DATABASE mk_bench_auth" >/dev/null
    token=()
    mode=disabled
    limits=""
    if [ "$COMPARE" = limits ] && [ "$auth" = on ]; then limits="client=1000000/s:1000000"; fi
    if [ "$auth" = on ] || [ "$COMPARE" = limits ]; then
      key=$(MARKETING_DATABASE_URL="$BASE/mk_bench_auth" RUST_LOG=warn \
        target/release/marketing-server clients create --name bench --role admin --all-tenants | tail -n 1)
      token=(--token "$key")
      mode=required
    fi
    MARKETING_RATE_LIMITS=$limits MARKETING_AUTH=$mode MARKETING_DATABASE_URL="$BASE/mk_bench_auth" \
      MARKETING_REDIS_URL="$MARKETING_TEST_REDIS_URL" MARKETING_REDIS_KEY_PREFIX="bench-auth:$(date +%s%N):" \
      MARKETING_GRPC_ADDR=$ADDR RUST_LOG=warn target/release/marketing-server >"$OUT/server-$round-$auth.log" 2>&1 &
    server=$!
    wait_for 60 "the server" env MARKETING_GRPC_ADDR=$ADDR target/release/marketing-server healthcheck
    target/release/marketing-bench get-template --addr $ADDR -c 64 -z 2s -O json -o "$OUT/warm-$round-$auth.json" "${token[@]}" >/dev/null
    target/release/marketing-bench get-template --addr $ADDR -c 64 -z "$DURATION" -O json -o "$OUT/$round-$auth.json" "${token[@]}" >/dev/null
    kill $server
    wait $server 2>/dev/null || true
  done
done
python3 - "$OUT" "$ROUNDS" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
ratios = []
for r in range(1, rounds + 1):
    on = json.load(open(f"{out}/{r}-on.json"))["rps"]
    off = json.load(open(f"{out}/{r}-off.json"))["rps"]
    ratios.append(on / off)
    print(f"round {r}: on {on:.0f}/s, off {off:.0f}/s, on/off {on / off:.3f}")
print(f"median on/off {statistics.median(ratios):.3f}")
PY
