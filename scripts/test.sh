#!/usr/bin/env bash
# Runs every test: unit tests, and the end-to-end suite against the real server on both
# backends (embedded SQLite, and PostgreSQL + Redis). Installs or starts PostgreSQL, Redis and
# grpcurl where they are missing. Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_postgres
ensure_redis
ensure_grpcurl
ensure_jq
drop_stale_test_databases

# The transport tests run the real binary in its own process; one test runs the load generator.
cargo build --locked -p marketing-server -p marketing-bench
# The end-to-end tests mostly wait (on servers, databases, sleeps): four at a time on two cores
# finish the suite in about half the time of one per core. RUST_TEST_THREADS overrides it.
export RUST_TEST_THREADS=${RUST_TEST_THREADS:-4}
cargo test --workspace --locked "$@"
