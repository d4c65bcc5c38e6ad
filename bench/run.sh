#!/usr/bin/env bash
# Benchmark of the user-flow API connector on SQLite and on PostgreSQL (see BENCHMARKS.md). Run
# from anywhere, as root so that missing tools can be installed:
#
#   bash bench/run.sh                                   # both backends, one after the other
#   BENCH_DATABASE=sqlite bash bench/run.sh             # or postgres
#   BENCH_CUSTOMERS=10000000 BENCH_DATABASE=postgres bash bench/run.sh
#
# Builds in release mode, writes BENCH_CUSTOMERS customers to a CSV file with awk, and starts the
# bare actix-web endpoint (examples/bare_json.rs) for the whole run. Then, for each backend in
# turn (SQLite first), alone on the machine but for the bare endpoint:
#   - a new database: a SQLite file in the run's temporary folder, or a PostgreSQL database
#     autolink_bench_<stamp> created on the server of BENCH_POSTGRES_URL (dropped at the end
#     unless BENCH_KEEP=1); the customers loaded with `autolink customers import` (timed);
#   - `autolink serve` on it, the sign-in set pre-linked (the cold start), then BENCH_REPS
#     repetitions measured with wrk, each in this order:
#       (c) bare     : a JSON POST that does no work (the ceiling on this machine, in this run);
#       (b) sign-up  : PostAttributeCollection + PreTokenIssuance creating new links, alternating;
#       (a) sign-in  : PreTokenIssuance for identities linked already (the hot path);
#     the share of bare is (a)/(c) of each repetition, and the medians are reported;
#   - the server stopped and its database checked (sqlite3 or psql): links, audit events,
#     customers, duplicates.
# Every answer is checked (bench/connector.lua); a run with a bad answer is not a valid figure
# and makes the script exit non-zero. The results (bench/out/results-<stamp>.md) have one section
# per backend, each with its own table of issue 15's targets and whether each is met, and a
# summary; the raw wrk output is in bench/out/wrk-<stamp>.log.
#
# Knobs (environment): BENCH_DATABASE (both; or sqlite, postgres), BENCH_POSTGRES_URL
# (postgres://postgres@127.0.0.1:5432/postgres: where psql creates and drops the benchmark's
# database), BENCH_REPS (3), BENCH_DURATION (15s), BENCH_WARMUP (3s),
# BENCH_THREADS (2), BENCH_CONNECTIONS (32), BENCH_CUSTOMERS (100000),
# BENCH_SIGNIN_IDENTITIES (10000), BENCH_AUDIT_EVENTS (0: events of earlier sign-ins appended
# in SQL before the server starts, spread over every customer; on SQLite the run then waits, at
# most BENCH_LOOKUP_WAIT seconds (900), for the audit lookup merge to catch up before measuring),
# BENCH_WEBHOOK (none; compare: each backend is measured twice, the second time with a webhook
# whose endpoint is down, and the results compare the two), BENCH_BINARIES (a folder holding autolink and bare_json built earlier: used instead of
# building; say which code with BENCH_CODE), BENCH_AUDIT_SAMPLES (15: customers whose audit is queried by email and identity through the
# admin API after the measurements), BENCH_KEEP=1 keeps the temporary folder and the PostgreSQL
# database, BENCH_CODE labels the code measured in the results, BENCH_EXPERIMENT_SQL (diagnostic
# only) runs SQL on each database before its server starts, BENCH_PROFILE=SECONDS (diagnostic
# only) records perf profiles of the servers. AUTOLINK_* settings in the environment reach the
# server (e.g. AUTOLINK_DATABASE__POOL_SIZE) and are named in the results; AUTOLINK_CONFIG and
# AUTOLINK_DATABASE_URL are ignored (the run configures its own databases).
# BENCH_SCHED_AUTOGROUP=0 or 1 sets the kernel's autogroup scheduling
# (/proc/sys/kernel/sched_autogroup_enabled, as root) for the run and puts it back at the end;
# unset, the machine's setting is used. Either way the results say which. With autogroup, the
# kernel shares the CPU between sessions first: a PostgreSQL server started as a service on the
# same cores then waits for its session's turn (BENCHMARKS.md, 2026-12-04 16:50).
# Needs: cargo, awk, curl, wrk, and sqlite3 or psql for the backends measured (Debian packages
# wrk, sqlite3, postgresql-client; installed with apt-get when missing and running as root).
# No python.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
DATABASES=${BENCH_DATABASE:-both}
REPS=${BENCH_REPS:-3}
DURATION=${BENCH_DURATION:-15s}
WARMUP=${BENCH_WARMUP:-3s}
THREADS=${BENCH_THREADS:-2}
CONNS=${BENCH_CONNECTIONS:-32}
CUSTOMERS=${BENCH_CUSTOMERS:-100000}
SIGNIN=${BENCH_SIGNIN_IDENTITIES:-10000}
PROFILE=${BENCH_PROFILE:-}
USER_NAME=b2c-connector
PASSWORD=bench-password
CLIENT_ID=93fd07aa-333c-409d-955d-96008fd08dd9
TENANT_ISSUER=https://fabrikam.b2clogin.com/775527ff-9a37-4307-8b3d-cc311f58d925/v2.0/
LUA=$ROOT/bench/connector.lua
STAMP=$(date +%Y-%m-%d-%H%M%S)
OUT=$ROOT/bench/out
mkdir -p "$OUT"
LOG=$OUT/wrk-$STAMP.log
RESULTS=$OUT/results-$STAMP.md
: >"$LOG"
BACKEND=-

source "$ROOT/bench/lib/measure.sh"
source "$ROOT/bench/lib/phase.sh"
source "$ROOT/bench/lib/sqlite.sh"
source "$ROOT/bench/lib/postgres.sh"
# `db NAME ARGS`: the function NAME of the backend being measured (bench/lib/<backend>.sh).
db() { "${BACKEND}_$1" "${@:2}"; }

case $DATABASES in
    both) BACKENDS=(sqlite postgres) ;;
    sqlite | postgres) BACKENDS=("$DATABASES") ;;
    *) die "BENCH_DATABASE is sqlite, postgres or both, not $DATABASES" ;;
esac
((SIGNIN < CUSTOMERS)) || die "BENCH_SIGNIN_IDENTITIES ($SIGNIN) must be below BENCH_CUSTOMERS ($CUSTOMERS)"
for name in AUTOLINK_CONFIG AUTOLINK_DATABASE_URL; do
    [[ -n ${!name:-} ]] && say "ignoring $name (the run configures its own databases)"
    unset "$name"
done

# --- tools ---------------------------------------------------------------------------------
missing=()
needs=(wrk:wrk)
for backend in "${BACKENDS[@]}"; do needs+=($("${backend}_tools")); done
for need in "${needs[@]}"; do
    command -v "${need%%:*}" >/dev/null || missing+=("${need#*:}")
done
if ((${#missing[@]})); then
    [[ $(id -u) == 0 ]] || die "install ${missing[*]} (Debian packages) or run as root"
    say "installing ${missing[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
for need in cargo:cargo awk:awk curl:curl "${needs[@]}"; do
    command -v "${need%%:*}" >/dev/null || die "${need%%:*} is missing"
done

# --- build -----------------------------------------------------------------------------------
if [[ -n ${BENCH_BINARIES:-} ]]; then
    # Binaries built earlier (autolink and bare_json in that folder); BENCH_CODE says what they are.
    say "using the binaries in $BENCH_BINARIES (not built)"
    AUTOLINK=$BENCH_BINARIES/autolink
    BARE=$BENCH_BINARIES/bare_json
    TARGET=$BENCH_BINARIES
else
    say "cargo build --release --bin autolink --example bare_json"
    cargo build --release --bin autolink --example bare_json
    TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
    AUTOLINK=$TARGET/release/autolink
    BARE=$TARGET/release/examples/bare_json
fi
[[ -x $AUTOLINK && -x $BARE ]] || die "binaries not found under $TARGET/release"
# BENCH_CODE names the code when it is not this checkout's (e.g. an export of a commit).
BUILD_TREE=${BENCH_CODE:-"the working tree at commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock migrations 2>/dev/null || echo ' with uncommitted changes in src/Cargo/migrations')"}

# --- data and configuration --------------------------------------------------------------------
WORK=$(mktemp -d /tmp/autolink-bench.XXXXXX)
SERVER_PID=
BARE_PID=
AUTOGROUP_FILE=/proc/sys/kernel/sched_autogroup_enabled
AUTOGROUP_BEFORE=$(cat "$AUTOGROUP_FILE" 2>/dev/null || echo '')
if [[ -n ${BENCH_SCHED_AUTOGROUP:-} ]]; then
    [[ $BENCH_SCHED_AUTOGROUP == 0 || $BENCH_SCHED_AUTOGROUP == 1 ]] || die "BENCH_SCHED_AUTOGROUP is 0 or 1"
    [[ -n $AUTOGROUP_BEFORE ]] || die "BENCH_SCHED_AUTOGROUP: this kernel has no $AUTOGROUP_FILE"
    echo "$BENCH_SCHED_AUTOGROUP" >"$AUTOGROUP_FILE" || die "BENCH_SCHED_AUTOGROUP: cannot write $AUTOGROUP_FILE (run as root)"
    say "kernel autogroup scheduling set to $BENCH_SCHED_AUTOGROUP for the run (was $AUTOGROUP_BEFORE)"
fi
# How the kernel shares the CPU during the run, for the results.
autogroup_line() {
    local now
    now=$(cat "$AUTOGROUP_FILE" 2>/dev/null || echo '?')
    case $now in
        1) now="on (the CPU is shared between sessions first: PostgreSQL's service and this run's processes are two sessions)" ;;
        0) now="off (the CPU is shared between processes)" ;;
        *) now="not available on this kernel" ;;
    esac
    if [[ -n ${BENCH_SCHED_AUTOGROUP:-} ]]; then
        echo "Kernel autogroup scheduling: $now, set by BENCH_SCHED_AUTOGROUP=$BENCH_SCHED_AUTOGROUP for this run (the machine's setting: $AUTOGROUP_BEFORE)."
    else
        echo "Kernel autogroup scheduling: $now, as the machine has it."
    fi
}
cleanup() {
    if [[ -n ${BENCH_SCHED_AUTOGROUP:-} && -n $AUTOGROUP_BEFORE ]]; then
        echo "$AUTOGROUP_BEFORE" >"$AUTOGROUP_FILE" 2>/dev/null || true
    fi
    [[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null || true
    [[ -n $BARE_PID ]] && kill "$BARE_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    local backend
    for backend in "${BACKENDS[@]}"; do "${backend}_drop" || true; done
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then say "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
# Run copies, so that a build by someone else during the run cannot swap the binaries.
cp "$AUTOLINK" "$WORK/autolink"
cp "$BARE" "$WORK/bare_json"
AUTOLINK=$WORK/autolink
BARE=$WORK/bare_json
BUILD_SHA=$(sha256sum "$AUTOLINK" | cut -c1-12)

CSV=$WORK/customers.csv
say "writing $CUSTOMERS customers to a CSV file"
awk -v n="$CUSTOMERS" 'BEGIN {
    print "account_number,legal_entity,party_type,is_b2b,primary_email,first_name,last_name"
    for (i = 0; i < n; i++)
        printf "C%07d,USRT,person,false,customer%d@example.com,First%d,Last%d\n", i, i, i, i
}' >"$CSV"
# Secrets are configured as argon2id hashes, as in production: the first call of each costs one
# argon2 check on the bounded pool (a clear `password` or `token` would be kept in keyed form and
# cost none, which is not what production measures).
PASSWORD_HASH=$(printf '%s\n' "$PASSWORD" | "$AUTOLINK" hash-secret)
ADMIN_TOKEN_HASH=$(printf '%s\n' bench-admin-token | "$AUTOLINK" hash-secret)
AUTH=$(printf '%s:%s' "$USER_NAME" "$PASSWORD" | base64 | tr -d '\n')

# BENCH_WEBHOOK=compare: a port on which nothing listens, for the webhook that is down.
if [[ ${BENCH_WEBHOOK:-none} == compare ]]; then
    DEAD_PORT=9
    while (echo >"/dev/tcp/127.0.0.1/$DEAD_PORT") 2>/dev/null; do DEAD_PORT=$((DEAD_PORT + 1)); done
    say "webhook endpoint down: http://127.0.0.1:$DEAD_PORT/ (nothing listens there)"
fi

# --- the bare endpoint, for the whole run ------------------------------------------------------
"$BARE" 0 >"$WORK/bare.out" 2>"$WORK/bare.err" &
BARE_PID=$!
BARE_URL=$(wait_listening "$WORK/bare.out" "$BARE_PID") || { cat "$WORK/bare.err" >&2; die "bare_json did not start"; }
say "bare_json $BARE_URL (pid $BARE_PID)"

# AUTOLINK_* settings the server inherits, with the values of secrets and URLs hidden.
SERVER_ENV=$( (env | grep '^AUTOLINK_' || true) | sort | sed -E '/^[^=]*(URL|PASSWORD|TOKEN|SECRET|KEY)[^=]*=/s/=.*/=(hidden)/' | paste -sd ' ' -)
[[ -n $SERVER_ENV ]] || SERVER_ENV="none, the configuration's defaults"
{
    echo "# autolink connector benchmark, $STAMP"
    echo
    echo "Command: \`bash bench/run.sh\` (DATABASE=$DATABASES WEBHOOK=${BENCH_WEBHOOK:-none} REPS=$REPS DURATION=$DURATION WARMUP=$WARMUP THREADS=$THREADS CONNECTIONS=$CONNS CUSTOMERS=$CUSTOMERS SIGNIN=$SIGNIN AUDIT_EVENTS=${BENCH_AUDIT_EVENTS:-0})"
    echo
    echo "Machine: $(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr), load before: $(cut -d' ' -f1-3 /proc/loadavg); wrk runs on the same cores as the servers."
    autogroup_line
    echo "Code measured: $BUILD_TREE (binary sha256 $BUILD_SHA); $(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2); $(rustc --version)"
    echo "Data: $CUSTOMERS customers (customer<i>@example.com, legal entity USRT), $SIGNIN of them signed in (pre-linked); each backend runs alone, one after the other, beside the one bare endpoint."
    echo "Server settings from the environment: $SERVER_ENV."
    [[ -n $PROFILE ]] && echo "PROFILED (not the service's figures): perf sampled the servers for ${PROFILE} s of the first runs: bench/out/perf-$STAMP-<backend>-{a,b,c}.data."
    env | grep -q '^MALLOC_' && echo "Allocator settings in the environment (not the defaults): $(env | grep '^MALLOC_' | tr '\n' ' ')"
    true
} | tee "$RESULTS"

# --- each backend ------------------------------------------------------------------------------
SUMMARY=()
RUN_INVALID=0
for backend in "${BACKENDS[@]}"; do
    VARIANT=
    WEBHOOK_URL=
    measure_backend "$backend"
    if [[ ${BENCH_WEBHOOK:-none} == compare ]]; then
        VARIANT="webhook endpoint down"
        WEBHOOK_URL=http://127.0.0.1:$DEAD_PORT/hooks/autolink
        measure_backend "$backend"
        VARIANT=
        WEBHOOK_URL=
    fi
done
BACKEND=-

{
    echo
    echo "## Summary"
    echo
    echo "| backend | (c) bare req/s | (a) sign-in req/s, share of (c) | (a) p99 | (b) new links/s | peak RSS | targets met | valid |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
    printf '%s\n' "${SUMMARY[@]}"
    echo
    echo "Raw wrk output: bench/out/$(basename "$LOG")"
    if [[ ${BENCH_WEBHOOK:-none} == compare ]]; then
        echo
        echo "Each backend was measured twice in this run: without a webhook, then with a webhook"
        echo "whose endpoint is down (http://127.0.0.1:$DEAD_PORT/: nothing listens; every attempt fails"
        echo "at once and is retried on the default schedule). Compare the sign-in's share of bare"
        echo "and p99 of the two lines of each backend."
    fi
} | tee -a "$RESULTS"

say "results: $RESULTS"
((RUN_INVALID == 0)) || exit 2
