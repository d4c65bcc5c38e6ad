#!/usr/bin/env bash
# HTTP conformance, checked by a real client: runs schemathesis against the server's own
# /openapi.json, with every check, and fails on any failure that tests/conformance/accepted.toml
# does not list with its reason.
#
#   tests/conformance/run.sh                 # SQLite
#   CONFORMANCE_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres tests/conformance/run.sh
#                                            # SQLite, then a fresh PostgreSQL database
#
# What it does, from the repository root:
# 1. creates a Python virtual environment under target/conformance/venv and installs the pinned
#    schemathesis into it (PyPI only), unless that version is there already;
# 2. builds `autolink` (debug) and starts `autolink serve` on a free port with a temporary
#    SQLite database (and, when CONFORMANCE_POSTGRES_URL is set, again on a database created on
#    that server and dropped afterwards), a configuration with two channels, a relying party
#    whose keys cannot be fetched, and credentials made up for this run (connector HTTP Basic,
#    admin token), passed through the environment and never printed;
# 3. seeds two customers (CLI import), one link (a connector call) and a prospect;
# 4. fetches /openapi.json with the admin token and runs `schemathesis run` on it against the
#    server, every check, a bounded number of examples per operation and a fixed seed, with the
#    admin token for /admin/v1/* and /openapi.json and Basic for /b2c/* (per security scheme);
# 5. reads the run's report (tests/conformance/check.py): any failure or error that
#    accepted.toml does not list fails the script.
#
# Settings (environment): CONFORMANCE_MAX_EXAMPLES (default 60 per operation),
# CONFORMANCE_SEED (default 20261203), CONFORMANCE_POSTGRES_URL (unset: SQLite only),
# CI=true (nothing may be skipped: a PostgreSQL URL that does not answer fails the run).
# Reports are kept in target/conformance/<backend>/.
set -euo pipefail
cd "$(dirname "$0")/../.."

SCHEMATHESIS_VERSION=4.32.5
max_examples="${CONFORMANCE_MAX_EXAMPLES:-60}"
seed="${CONFORMANCE_SEED:-20261203}"
pg_url="${CONFORMANCE_POSTGRES_URL:-}"
ci="${CI:-false}"
root="$PWD"
work="$root/target/conformance"
venv="$work/venv"

say() { printf '==> conformance: %s\n' "$*"; }
fail() { printf 'conformance: FAILED: %s\n' "$*" >&2; exit 1; }

# --- schemathesis, pinned, in its own virtual environment ---------------------------------
mkdir -p "$work"
if [ "$("$venv/bin/schemathesis" --version 2>/dev/null || true)" != "schemathesis, version $SCHEMATHESIS_VERSION" ]; then
    say "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv" || fail "python3 -m venv failed (on Debian: apt-get install python3-venv)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "schemathesis==$SCHEMATHESIS_VERSION" || fail "pip could not install schemathesis $SCHEMATHESIS_VERSION"
fi
"$venv/bin/schemathesis" --version

# --- the server ----------------------------------------------------------------------------
say "building autolink"
cargo build --quiet --bin autolink
bin="$root/target/debug/autolink"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
secret() { python3 -c 'import secrets; print(secrets.token_urlsafe(24))'; }

# Made up for this run; they reach the server and schemathesis through the environment only.
AUTOLINK_AUTH__BASIC__PASSWORD="$(secret)"
AUTOLINK_ADMIN__TOKEN="$(secret)"
export AUTOLINK_AUTH__BASIC__PASSWORD AUTOLINK_ADMIN__TOKEN
export CONFORMANCE_CONNECTOR_USER="b2c-connector"

server_pid=""
tmp=""
pg_db=""
cleanup() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [ -n "$pg_db" ]; then
        psql -q "$pg_url" -c "DROP DATABASE IF EXISTS \"$pg_db\" WITH (FORCE)" >/dev/null || true
    fi
    if [ -n "$tmp" ]; then rm -rf "$tmp"; fi
}
trap cleanup EXIT

# run_backend NAME DATABASE_URL
run_backend() {
    local name="$1" database_url="$2"
    local out="$work/$name"
    rm -rf "$out"
    mkdir -p "$out"
    local port
    port="$(free_port)"
    local unreachable
    unreachable="$(free_port)"
    local base="http://127.0.0.1:$port"
    cat >"$tmp/autolink.toml" <<EOF
bind = "127.0.0.1:$port"
database_url = "$database_url"
tenant_issuer = "https://conformance.b2clogin.com/00000000-0000-0000-0000-000000000000/v2.0/"
workers = 2

[linking]
email_verifying_idps = ["google.com"]

[[channels]]
id = "web"
legal_entity = "USRT"
customer_type = "B2C"
client_ids = ["00000000-0000-0000-0000-00000000d3e0"]

[[channels]]
id = "b2b"
legal_entity = "USRT"
customer_type = "B2B"
client_ids = ["00000000-0000-0000-0000-0000000000b2"]

[auth.basic]
username = "$CONFORMANCE_CONNECTOR_USER"
# password: AUTOLINK_AUTH__BASIC__PASSWORD
# [admin] token: AUTOLINK_ADMIN__TOKEN

# /v1/link is configured, so it is tested as deployed; its keys live nowhere (a free port),
# and a token that gets as far as its signature is answered 503.
[relying_party]
metadata_urls = ["http://127.0.0.1:$unreachable/conformance.onmicrosoft.com/B2C_1_signup_signin/v2.0/.well-known/openid-configuration"]

# The Entra External ID endpoints are configured too, so they are tested as deployed (a call
# without the events service's bearer token is a 401); their keys live nowhere either.
[entra]
tenant_id = "0b5e2c1a-7d3f-4e6a-9c8b-1f2e3d4c5b6a"
audiences = ["7c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"]
metadata_url = "http://127.0.0.1:$unreachable/0b5e2c1a-7d3f-4e6a-9c8b-1f2e3d4c5b6a/v2.0/.well-known/openid-configuration"
EOF
    say "[$name] seeding two customers"
    printf '%s\n' \
        'account_number,legal_entity,party_type,is_b2b,primary_email,first_name,last_name' \
        'C-1,USRT,person,false,ana@example.com,Ana,One' \
        'C-2,USRT,person,true,bo@example.com,Bo,Two' >"$tmp/customers.csv"
    "$bin" --config "$tmp/autolink.toml" customers import "$tmp/customers.csv" >"$out/import.log" 2>&1 \
        || { cat "$out/import.log" >&2; fail "[$name] the import failed"; }

    say "[$name] starting autolink serve on $base (log: $out/server.log)"
    RUST_LOG=warn "$bin" --config "$tmp/autolink.toml" serve >"$out/server.log" 2>&1 &
    server_pid=$!
    "$venv/bin/python" tests/conformance/check.py wait "$base" \
        || { cat "$out/server.log" >&2; fail "[$name] the server did not start"; }
    "$venv/bin/python" tests/conformance/check.py seed "$base" "$out/openapi.json" \
        || fail "[$name] seeding or fetching /openapi.json failed"

    say "[$name] schemathesis $SCHEMATHESIS_VERSION: all checks, at most $max_examples examples per operation, seed $seed"
    local started=$SECONDS
    set +e
    (cd "$out" && "$venv/bin/schemathesis" --config-file "$root/tests/conformance/schemathesis.toml" \
        run openapi.json --url "$base" --checks all --max-examples "$max_examples" \
        --seed "$seed" --workers 1 --no-color --report ndjson,json --report-dir report \
        >schemathesis.txt 2>&1)
    local status=$?
    set -e
    say "[$name] schemathesis exited with $status after $((SECONDS - started)) s (output: $out/schemathesis.txt)"
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
    grep -qi "panicked" "$out/server.log" && fail "[$name] the server panicked (see $out/server.log)"
    "$venv/bin/python" tests/conformance/check.py report "$out/report" tests/conformance/accepted.toml \
        || fail "[$name] conformance failures (see above and $out/schemathesis.txt)"
}

tmp="$(mktemp -d)"
run_backend sqlite "sqlite://$tmp/conformance.db"

if [ -n "$pg_url" ]; then
    command -v psql >/dev/null 2>&1 || fail "CONFORMANCE_POSTGRES_URL is set but psql is not installed (postgresql-client)"
    pg_db="autolink_conformance_$$_$RANDOM"
    if ! psql -q "$pg_url" -c "CREATE DATABASE \"$pg_db\"" >/dev/null; then
        pg_db=""
        fail "cannot create a database on $pg_url"
    fi
    run_backend postgres "${pg_url%/*}/$pg_db"
elif [ "$ci" = "true" ]; then
    fail "CI=true and CONFORMANCE_POSTGRES_URL is not set: the PostgreSQL pass cannot be skipped"
else
    printf '\n*** THE POSTGRESQL CONFORMANCE PASS DID NOT RUN (set CONFORMANCE_POSTGRES_URL) ***\n' >&2
fi
say "passed"
