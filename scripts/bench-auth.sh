#!/usr/bin/env bash
# What auth costs: get-template on one release build served with MARKETING_AUTH=required and
# a key on every call ("on") against MARKETING_AUTH=disabled and no key ("off"), rounds in
# alternating order, a fresh database each time; prints the on/off ratio of every round and
# their median. BENCH_ROUNDS (4) rounds, BENCH_DURATION (5s) each.
# BENCH_COMPARE=limits compares instead a keyed server whose client calls are rate-limited
# (MARKETING_RATE_LIMITS=client=..., high enough never to refuse: one Redis script per call)
# ("on") with the same keyed server without limits ("off"): what a client limit costs.
# BENCH_COMPARE=tls compares a keyed server over TLS ("on") with the same keyed server in plain
# text ("off"); BENCH_COMPARE=mtls a server that requires client certificates, the bench's
# certificate naming its client and no key sent ("on"), with the keyed plain-text server
# ("off"). The certificates are made with openssl at the start (P-256, as the README's).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
ensure_postgres
ensure_redis
drop_redis_keys 'bench*'
ROUNDS=${BENCH_ROUNDS:-4}
DURATION=${BENCH_DURATION:-5s}
COMPARE=${BENCH_COMPARE:-auth}
OUT=$ROOT/target/bench-auth
ADDR=127.0.0.1:50561
BASE=${MARKETING_TEST_DATABASE_URL%/*}
rm -rf "$OUT" && mkdir -p "$OUT"
case "$COMPARE" in
  auth | limits) ;;
  tls | mtls)
    (
      cd "$OUT"
      ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
      openssl req -x509 "${ec[@]}" -days 1 -subj "/CN=bench CA" -keyout ca.key -out ca.pem
      for name in localhost bench; do
        openssl req "${ec[@]}" -subj "/CN=$name" -keyout $name.key -out $name.csr
        openssl x509 -req -in $name.csr -CA ca.pem -CAkey ca.key -days 1 -out $name.pem \
          -extfile <(printf "subjectAltName=DNS:%s" $name)
      done
    ) 2>/dev/null
    ;;
  *) echo "BENCH_COMPARE is auth, limits, tls or mtls, not $COMPARE" >&2 && exit 2 ;;
esac
log "building the server and the bench (release)"
cargo build --release --locked -p marketing-server -p marketing-bench
server=""
trap '[ -z "$server" ] || kill $server 2>/dev/null || true' EXIT
for round in $(seq "$ROUNDS"); do
  order="on off"
  if [ $((round % 2)) = 0 ]; then order="off on"; fi
  for auth in $order; do
    fresh_database mk_bench_auth
    token=()
    mode=disabled
    limits=""
    tls=()
    served=(-u MARKETING_TLS_CERT -u MARKETING_TLS_KEY -u MARKETING_TLS_CLIENT_CA)
    check=()
    if [ "$COMPARE" = limits ] && [ "$auth" = on ]; then limits="client=1000000/s:1000000"; fi
    if [ "$auth" = on ] || [ "$COMPARE" != auth ]; then
      key=$(MARKETING_DATABASE_URL="$BASE/mk_bench_auth" RUST_LOG=warn \
        target/release/marketing-server clients create --name bench --role admin --all-tenants | tail -n 1)
      token=(--token "$key")
      mode=required
    fi
    if [ "$auth" = on ] && { [ "$COMPARE" = tls ] || [ "$COMPARE" = mtls ]; }; then
      served=(-u MARKETING_TLS_CLIENT_CA MARKETING_TLS_CERT="$OUT/localhost.pem" MARKETING_TLS_KEY="$OUT/localhost.key")
      tls=(--cacert "$OUT/ca.pem" --cname localhost)
      check=(--cacert "$OUT/ca.pem" --servername localhost)
      if [ "$COMPARE" = mtls ]; then
        served=("${served[@]:2}" MARKETING_TLS_CLIENT_CA="$OUT/ca.pem")
        tls+=(--cert "$OUT/bench.pem" --key "$OUT/bench.key")
        check+=(--cert "$OUT/bench.pem" --key "$OUT/bench.key")
        token=()
      fi
    fi
    env "${served[@]}" MARKETING_RATE_LIMITS=$limits MARKETING_AUTH=$mode MARKETING_DATABASE_URL="$BASE/mk_bench_auth" \
      MARKETING_REDIS_URL="$MARKETING_TEST_REDIS_URL" MARKETING_REDIS_KEY_PREFIX="bench-auth:$(date +%s%N):" \
      MARKETING_GRPC_ADDR=$ADDR MARKETING_METRICS_ADDR= RUST_LOG=warn target/release/marketing-server >"$OUT/server-$round-$auth.log" 2>&1 &
    server=$!
    wait_for 60 "the server" env "${served[@]}" MARKETING_GRPC_ADDR=$ADDR target/release/marketing-server healthcheck "${check[@]}"
    target/release/marketing-bench get-template --addr $ADDR -c 64 -z 2s -O json -o "$OUT/warm-$round-$auth.json" "${token[@]}" "${tls[@]}" >/dev/null
    target/release/marketing-bench get-template --addr $ADDR -c 64 -z "$DURATION" -O json -o "$OUT/$round-$auth.json" "${token[@]}" "${tls[@]}" >/dev/null
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
