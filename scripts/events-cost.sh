#!/usr/bin/env bash
# What events cost, side by side: the server as built (B) against the same commit built with
# `marketing-storage/diagnostic-no-events` (A: its units write no events, so nothing is
# numbered or relayed), measured by scripts/bench-ab.sh in alternating rounds.
#   scripts/events-cost.sh [SCENARIO ...]   (default: claim-hot deduct-spread)
#   BENCH_ROUNDS, BENCH_DURATION as for scripts/bench-ab.sh
# A is built in target/no-events (a separate target directory: the first build is a full one).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

case ${1:-} in -h | --help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(claim-hot deduct-spread)

log "building the server without events (target/no-events)"
CARGO_TARGET_DIR=$ROOT/target/no-events cargo build --release --locked -p marketing-server \
  --features marketing-storage/diagnostic-no-events
log "building the server"
cargo build --release --locked -p marketing-server
mkdir -p target/events-cost
cp target/no-events/release/marketing-server target/events-cost/without-events
cp target/release/marketing-server target/events-cost/with-events
exec scripts/bench-ab.sh target/events-cost/without-events target/events-cost/with-events \
  "${SCENARIOS[@]}"
