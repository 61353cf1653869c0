#!/usr/bin/env bash
# The long runs the suite keeps short (each has a short version in scripts/test.sh):
#   - 100,000 calls naming made-up ids (25,000 each of claims of made-up templates, earns of
#     made-up members, earns of made-up events, leaderboard reads of made-up tenants) against
#     the real binary on PostgreSQL + Redis: Redis keys and resident memory a minute later
#     within the README's bounds. About 10 minutes on 2 cores.
# Extra arguments go to `cargo test`.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_postgres
ensure_redis
cargo build --locked -p marketing-server
MARKETING_TEST_MADE_UP_CALLS=25000 cargo test --locked -p marketing-tests --test e2e \
  "$@" -- bounds::calls_naming_made_up_ids_leave_nothing_lasting --nocapture
