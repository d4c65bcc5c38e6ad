#!/usr/bin/env bash
# Benchmark of Microsoft Entra External ID's token issuance call for users linked already (issue
# 17; see BENCHMARKS.md), on SQLite and on PostgreSQL. Run from anywhere:
#
#   bash bench/entra.sh                                 # both backends, one after the other
#   BENCH_DATABASE=sqlite bash bench/entra.sh           # or postgres
#
# Builds in release mode (`autolink` and the example bench_issuer), writes BENCH_CUSTOMERS
# customers to a CSV file, and starts bench_issuer (a local OpenID issuer whose `ENTRA_TOKEN` is
# shaped like the bearer token Entra's authentication events service sends: RS256, `aud` the
# extension's app id, `azp` 99045fe1-..., `tid`). Then, for each backend in turn:
#   - a new database (as bench/run.sh: bench/lib/<backend>.sh), the customers imported;
#   - `autolink serve` with `[entra]` pointing at the issuer;
#   - the sign-in set entra-0..SIGNIN-1 linked through the two endpoints, as Entra does at a
#     sign-up: attributeCollectionSubmit (email one-time-code identity) then tokenIssuanceStart
#     with the same correlation id (bench/entra.lua prelink, 8 threads of one connection each);
#   - BENCH_REPS measured runs of tokenIssuanceStart for those users (bench/entra.lua signin:
#     every answer must be provideClaimsForToken with AlreadyLinked and an account number), wrk
#     with BENCH_CONNECTIONS connections; the median of the runs' p99 and requests/s reported.
# Target (issue 17): p99 under 50 ms at 32 connections on both databases.
# Results: bench/out/entra-<stamp>.md; raw wrk output bench/out/entra-<stamp>.log.
#
# Knobs: BENCH_DATABASE (both), BENCH_POSTGRES_URL (postgres://postgres@127.0.0.1:5432/postgres),
# BENCH_REPS (3), BENCH_DURATION (15s), BENCH_WARMUP (3s), BENCH_THREADS (2), BENCH_CONNECTIONS
# (32), BENCH_CUSTOMERS (100000), BENCH_SIGNIN_IDENTITIES (10000), BENCH_BINARIES (a folder with
# autolink and bench_issuer built earlier; BENCH_CODE then says which code they are), BENCH_KEEP=1.
# Needs: cargo, awk, curl, wrk, and sqlite3 or psql.
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
CLIENT_ID=93fd07aa-333c-409d-955d-96008fd08dd9
TENANT=0c8c1c5e-5b8e-4e43-9d0b-4b1a3f1d2e3f
EXTENSION_APP=a13d0fc1-04ab-4ede-b215-63de0174cbb4
TENANT_ISSUER=https://fabrikam.b2clogin.com/775527ff-9a37-4307-8b3d-cc311f58d925/v2.0/
LUA=$ROOT/bench/entra.lua
TARGET_P99_MS=50
STAMP=$(date +%Y-%m-%d-%H%M%S)
OUT=$ROOT/bench/out
mkdir -p "$OUT"
LOG=$OUT/entra-$STAMP.log
RESULTS=$OUT/entra-$STAMP.md
: >"$LOG"
BACKEND=-

source "$ROOT/bench/lib/measure.sh"
source "$ROOT/bench/lib/sqlite.sh"
source "$ROOT/bench/lib/postgres.sh"
db() { "${BACKEND}_$1" "${@:2}"; }

case $DATABASES in
    both) BACKENDS=(sqlite postgres) ;;
    sqlite | postgres) BACKENDS=("$DATABASES") ;;
    *) die "BENCH_DATABASE is sqlite, postgres or both, not $DATABASES" ;;
esac
PRELINK_THREADS=8
for tool in wrk awk curl; do command -v "$tool" >/dev/null || die "$tool is missing"; done
for backend in "${BACKENDS[@]}"; do
    need=$("${backend}_tools")
    command -v "${need%%:*}" >/dev/null || die "${need%%:*} is missing (Debian package ${need#*:})"
done

# --- build -------------------------------------------------------------------------------------
if [[ -n ${BENCH_BINARIES:-} ]]; then
    AUTOLINK=$BENCH_BINARIES/autolink
    ISSUER=$BENCH_BINARIES/bench_issuer
else
    say "cargo build --release --bin autolink --example bench_issuer"
    cargo build --release --bin autolink --example bench_issuer
    TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
    AUTOLINK=$TARGET/release/autolink
    ISSUER=$TARGET/release/examples/bench_issuer
fi
[[ -x $AUTOLINK && -x $ISSUER ]] || die "binaries not found"
BUILD_TREE=${BENCH_CODE:-"commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock migrations 2>/dev/null || echo ' with uncommitted changes in src/Cargo/migrations')"}

WORK=$(mktemp -d /tmp/autolink-entra-bench.XXXXXX)
SERVER_PID=
ISSUER_PID=
cleanup() {
    [[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null || true
    [[ -n $ISSUER_PID ]] && kill "$ISSUER_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    local backend
    for backend in "${BACKENDS[@]}"; do "${backend}_drop" || true; done
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then say "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
cp "$AUTOLINK" "$WORK/autolink"
cp "$ISSUER" "$WORK/bench_issuer"
AUTOLINK=$WORK/autolink
ISSUER=$WORK/bench_issuer
BUILD_SHA=$(sha256sum "$AUTOLINK" | cut -c1-12)

CSV=$WORK/customers.csv
awk -v n="$CUSTOMERS" 'BEGIN {
    print "account_number,legal_entity,party_type,is_b2b,primary_email,first_name,last_name"
    for (i = 0; i < n; i++)
        printf "C%07d,USRT,person,false,customer%d@example.com,First%d,Last%d\n", i, i, i, i
}' >"$CSV"
ADMIN_TOKEN_HASH=$(printf '%s\n' bench-admin-token | "$AUTOLINK" hash-secret)
PASSWORD_HASH=$(printf '%s\n' bench-password | "$AUTOLINK" hash-secret)

# --- the issuer --------------------------------------------------------------------------------
"$ISSUER" 0 "$TENANT" >"$WORK/issuer.out" 2>"$WORK/issuer.err" &
ISSUER_PID=$!
ISSUER_URL=$(wait_listening "$WORK/issuer.out" "$ISSUER_PID") || { cat "$WORK/issuer.err" >&2; die "bench_issuer did not start"; }
for _ in $(seq 1 50); do grep -q '^ENTRA_TOKEN ' "$WORK/issuer.out" && break; sleep 0.1; done
TOKEN=$(sed -n 's/^ENTRA_TOKEN //p' "$WORK/issuer.out" | head -n1)
[[ -n $TOKEN ]] || die "bench_issuer printed no ENTRA_TOKEN"

write_config() {
    cat <<EOF
bind = "127.0.0.1:0"
database_url = "$1"
tenant_issuer = "$TENANT_ISSUER"

[[channels]]
id = "web"
legal_entity = "USRT"
customer_type = "B2C"
client_ids = ["$CLIENT_ID"]

[auth.basic]
username = "b2c-connector"
password_hash = "$PASSWORD_HASH"

[admin]
token_hash = "$ADMIN_TOKEN_HASH"

[entra]
tenant_id = "$TENANT"
metadata_url = "$ISSUER_URL/$TENANT/v2.0/.well-known/openid-configuration"
issuers = ["$ISSUER_URL/$TENANT/v2.0"]
audiences = ["$EXTENSION_APP"]
EOF
}

# wrk_run LABEL URL MODE DURATION [THREADS CONNECTIONS] -> the RESULT line of bench/entra.lua
wrk_run() {
    local label=$1 url=$2 mode=$3 duration=$4 threads=${5:-$THREADS} conns=${6:-$CONNS} out result
    out=$(wrk -t"$threads" -c"$conns" -d"$duration" --latency -s "$LUA" "$url" -- \
        "$mode" "$TOKEN" "$TENANT" "$CLIENT_ID" "$SIGNIN" "$threads")
    {
        echo "===== $BACKEND $label ($mode, $duration) $(date -Is) load $(cut -d' ' -f1-3 /proc/loadavg)"
        echo "\$ wrk -t$threads -c$conns -d$duration --latency -s bench/entra.lua $url -- $mode <token> $TENANT $CLIENT_ID $SIGNIN $threads"
        echo "$out"
    } >>"$LOG"
    result=$(grep '^RESULT ' <<<"$out") || die "$BACKEND $label: no RESULT line (see $LOG)"
    kill -0 "$SERVER_PID" 2>/dev/null || die "$BACKEND $label: the server died (see $WORK)"
    echo "$result"
}

bad_count() { echo $(($(field "$1" bad_status) + $(field "$1" bad_body) + $(field "$1" socket_errors))); }

{
    echo "# Entra External ID token issuance benchmark, $STAMP"
    echo
    echo "Command: \`bash bench/entra.sh\` (DATABASE=$DATABASES REPS=$REPS DURATION=$DURATION WARMUP=$WARMUP THREADS=$THREADS CONNECTIONS=$CONNS CUSTOMERS=$CUSTOMERS SIGNIN=$SIGNIN)"
    echo
    echo "Machine: $(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(uname -sr), load before: $(cut -d' ' -f1-3 /proc/loadavg); wrk runs on the same cores as the server."
    echo "Code measured: $BUILD_TREE (binary sha256 $BUILD_SHA); $(rustc --version)"
    echo "Call: POST /entra/token-issuance-start with a valid RS256 bearer token and a tokenIssuanceStart body, for $SIGNIN users linked already (of $CUSTOMERS customers); every answer checked (provideClaimsForToken, AlreadyLinked, an account number)."
    echo
    echo "| backend | runs p99 ms | median p99 ms | runs req/s | median req/s | p99 < $TARGET_P99_MS ms |"
    echo "| --- | --- | --- | --- | --- | --- |"
} >"$RESULTS"

INVALID=0
for backend in "${BACKENDS[@]}"; do
    BACKEND=$backend
    dir=$WORK/$backend
    mkdir -p "$dir"
    say "== $(db title)"
    db create
    CONFIG=$dir/autolink.toml
    write_config "$DB_URL" >"$CONFIG"
    db load >/dev/null || die "$backend: loading the customers failed"
    db prepare >/dev/null
    RUST_LOG=warn "$AUTOLINK" --config "$CONFIG" serve >"$dir/server.out" 2>"$dir/server.err" &
    SERVER_PID=$!
    url=$(wait_listening "$dir/server.out" "$SERVER_PID") || { cat "$dir/server.err" >&2; die "$backend: autolink did not start"; }
    say "$backend: autolink $url; linking entra-0..$((SIGNIN - 1)) through submit + token issuance"
    linked=0
    for attempt in 1 2 3 4 5 6 7 8; do
        result=$(wrk_run "prelink$attempt" "$url" prelink 20s "$PRELINK_THREADS" "$PRELINK_THREADS")
        (($(bad_count "$result") == 0)) || { grep '^FIRST_BAD' "$LOG" | tail -n1 >&2; die "$backend: bad answers while linking: $result"; }
        linked=$(db query "SELECT count(*) FROM identity_links WHERE subject LIKE 'entra-%'")
        say "$backend: $linked of $SIGNIN linked"
        ((linked >= SIGNIN)) && break
    done
    ((linked >= SIGNIN)) || die "$backend: only $linked of $SIGNIN users linked"
    db settle >/dev/null || true
    wrk_run warmup "$url" signin "$WARMUP" >/dev/null
    p99s=()
    rpss=()
    for rep in $(seq 1 "$REPS"); do
        result=$(wrk_run "signin$rep" "$url" signin "$DURATION")
        if (($(bad_count "$result"))); then
            say "$backend run $rep: bad answers: $result"
            grep '^FIRST_BAD' "$LOG" | tail -n1 >&2 || true
            INVALID=1
        fi
        p99s+=("$(field "$result" p99_ms)")
        rpss+=("$(field "$result" rps)")
        say "$backend run $rep: p99 $(field "$result" p99_ms) ms, $(field "$result" rps) req/s"
    done
    p99=$(median "${p99s[@]}")
    rps=$(median "${rpss[@]}")
    echo "| $(db title) | $(list "${p99s[@]}") | $p99 | $(list "${rpss[@]}") | $rps | $(verdict "$p99 < $TARGET_P99_MS") |" >>"$RESULTS"
    links_after=$(db query "SELECT count(*) FROM identity_links")
    ((links_after == SIGNIN)) || { say "$backend: $links_after links after the runs, expected $SIGNIN"; INVALID=1; }
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
done
BACKEND=-
{
    echo
    echo "Raw wrk output: bench/out/$(basename "$LOG")"
    ((INVALID == 0)) || echo "INVALID: some answers were not the expected ones (see the log)."
} >>"$RESULTS"
cat "$RESULTS"
((INVALID == 0)) || exit 2
