#!/usr/bin/env bash
# Benchmark of the user-flow API connector (see BENCHMARKS.md). Run from anywhere:
#
#   bash bench/run.sh
#
# Builds in release mode, imports 100,000 customers into a fresh SQLite database, starts
# `autolink serve` and the bare actix-web endpoint (examples/bare_json.rs) side by side, and
# measures with wrk, in each repetition and in this order:
#   (c) bare     : a JSON POST that does no work (the ceiling on this machine, in this run);
#   (b) sign-up  : PostAttributeCollection + PreTokenIssuance creating new links, alternating;
#   (a) sign-in  : PreTokenIssuance for identities linked already (the hot path).
# Every answer is checked (bench/connector.lua); a run with a bad answer is not a valid figure
# and makes the script exit non-zero. Afterwards the links are counted in the database.
#
# Knobs (environment): BENCH_REPS (3), BENCH_DURATION (15s), BENCH_WARMUP (3s),
# BENCH_THREADS (2), BENCH_CONNECTIONS (32), BENCH_CUSTOMERS (100000),
# BENCH_SIGNIN_IDENTITIES (10000), BENCH_KEEP=1 keeps the temporary folder, BENCH_CODE labels
# the code measured in the results, BENCH_EXPERIMENT_SQL (diagnostic only) runs SQL on the
# database before the server starts, BENCH_PROFILE=SECONDS (diagnostic only) records perf
# profiles of the server.
# Needs: cargo, awk, wrk and sqlite3 (both Debian packages; installed with apt-get when
# missing and running as root). No python.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
REPS=${BENCH_REPS:-3}
DURATION=${BENCH_DURATION:-15s}
WARMUP=${BENCH_WARMUP:-3s}
THREADS=${BENCH_THREADS:-2}
CONNS=${BENCH_CONNECTIONS:-32}
CUSTOMERS=${BENCH_CUSTOMERS:-100000}
SIGNIN=${BENCH_SIGNIN_IDENTITIES:-10000}
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

say() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }

# --- tools ---------------------------------------------------------------------------------
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v sqlite3 >/dev/null || missing+=(sqlite3)
if ((${#missing[@]})); then
    [[ $(id -u) == 0 ]] || die "install ${missing[*]} (Debian packages) or run as root"
    say "installing ${missing[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
for tool in cargo awk wrk sqlite3; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done

# --- build -----------------------------------------------------------------------------------
say "cargo build --release --bin autolink --example bare_json"
cargo build --release --bin autolink --example bare_json
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
AUTOLINK=$TARGET/release/autolink
BARE=$TARGET/release/examples/bare_json
[[ -x $AUTOLINK && -x $BARE ]] || die "binaries not found under $TARGET/release"
# BENCH_CODE names the code when it is not this checkout's (e.g. an export of a commit).
BUILD_TREE=${BENCH_CODE:-"the working tree at commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock migrations 2>/dev/null || echo ' with uncommitted changes in src/Cargo/migrations')"}

# --- data and configuration --------------------------------------------------------------------
WORK=$(mktemp -d /tmp/autolink-bench.XXXXXX)
SERVER_PID=
BARE_PID=
cleanup() {
    [[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null || true
    [[ -n $BARE_PID ]] && kill "$BARE_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then say "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
# Run copies, so that a build by someone else during the run cannot swap the binaries.
cp "$AUTOLINK" "$WORK/autolink"
cp "$BARE" "$WORK/bare_json"
AUTOLINK=$WORK/autolink
BARE=$WORK/bare_json
BUILD_SHA=$(sha256sum "$AUTOLINK" | cut -c1-12)

DB=$WORK/bench.db
CONFIG=$WORK/autolink.toml
CSV=$WORK/customers.csv
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
cat >"$CONFIG" <<EOF
bind = "127.0.0.1:0"
database_url = "sqlite://$DB"
tenant_issuer = "$TENANT_ISSUER"

[[channels]]
id = "web"
legal_entity = "USRT"
customer_type = "B2C"
client_ids = ["$CLIENT_ID"]

[auth.basic]
username = "$USER_NAME"
password_hash = "$PASSWORD_HASH"

[admin]
token_hash = "$ADMIN_TOKEN_HASH"
EOF

say "importing $CUSTOMERS customers"
import_line=$(RUST_LOG=warn "$AUTOLINK" --config "$CONFIG" customers import "$CSV")
say "$import_line"
[[ $(sqlite3 "$DB" 'SELECT count(*) FROM customers') == "$CUSTOMERS" ]] || die "import did not load $CUSTOMERS customers"
# Diagnostic only: SQL applied to the database before the server starts (e.g. an index being
# considered). Figures taken with it are not the service's figures; the results say so.
EXPERIMENT_SQL=${BENCH_EXPERIMENT_SQL:-}
if [[ -n $EXPERIMENT_SQL ]]; then
    say "EXPERIMENT: applying $EXPERIMENT_SQL"
    sqlite3 "$DB" "$EXPERIMENT_SQL"
fi
# How SQLite plans the sign-in lookup (the query of storage::links::find_active; diesel binds
# `active = ?`).
PLAN_FIND_ACTIVE=$(sqlite3 "$DB" "EXPLAIN QUERY PLAN SELECT customers.id, customers.account_number FROM identity_links INNER JOIN customers ON identity_links.customer_id = customers.id WHERE identity_links.issuer = ?1 AND identity_links.subject = ?2 AND identity_links.active = ?3 LIMIT ?4" | sed -n 's/^[|`]--//p' | paste -sd ';' -)

# --- servers -------------------------------------------------------------------------------------
# Waits for "<name> listening on http://HOST:PORT" in a file and prints the URL.
wait_listening() {
    local file=$1 pid=$2 url=
    for _ in $(seq 1 300); do
        url=$(sed -n 's/.* listening on \(http:[^ ]*\).*/\1/p' "$file" | head -n1)
        [[ -n $url ]] && { echo "$url"; return 0; }
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

RUST_LOG=warn "$AUTOLINK" --config "$CONFIG" serve >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER_PID=$!
SERVER_URL=$(wait_listening "$WORK/server.out" "$SERVER_PID") || { cat "$WORK/server.err" >&2; die "autolink did not start"; }
"$BARE" 0 >"$WORK/bare.out" 2>"$WORK/bare.err" &
BARE_PID=$!
BARE_URL=$(wait_listening "$WORK/bare.out" "$BARE_PID") || { cat "$WORK/bare.err" >&2; die "bare_json did not start"; }
say "autolink $SERVER_URL (pid $SERVER_PID), bare_json $BARE_URL (pid $BARE_PID)"

AUTH=$(printf '%s:%s' "$USER_NAME" "$PASSWORD" | base64 | tr -d '\n')
CONNECTOR=$SERVER_URL/b2c/api-connector

status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
# User + system CPU time of a process, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TICKS=$(getconf CLK_TCK)
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<" $1"; }

# Busy CPU time of the whole machine (all cores), in clock ticks.
machine_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }

# run_wrk LABEL URL MODE TAG DURATION PID -> prints the RESULT line of bench/connector.lua plus
# the CPU the server, wrk and everything else on the machine used during the run.
run_wrk() {
    local label=$1 url=$2 mode=$3 tag=$4 duration=$5 pid=$6 out result tfile load
    local s0 s1 m0 m1 wrk_cpu
    tfile=$WORK/time.$label
    load=$(cut -d' ' -f1 /proc/loadavg)
    s0=$(cpu_ticks "$pid"); m0=$(machine_ticks)
    out=$( { TIMEFORMAT='%U %S'; time wrk -t"$THREADS" -c"$CONNS" -d"$duration" --latency -s "$LUA" "$url" -- \
        "$mode" "$tag" "$AUTH" "$CLIENT_ID" "$SIGNIN" "$CUSTOMERS"; } 2>"$tfile")
    s1=$(cpu_ticks "$pid"); m1=$(machine_ticks)
    {
        echo "===== $label ($mode, tag $tag, $duration) $(date -Is) load $load"
        echo "\$ wrk -t$THREADS -c$CONNS -d$duration --latency -s bench/connector.lua $url -- $mode $tag <auth> $CLIENT_ID $SIGNIN $CUSTOMERS"
        echo "$out"
    } >>"$LOG"
    result=$(grep '^RESULT ' <<<"$out") || die "$label: no RESULT line (see $LOG)"
    kill -0 "$pid" 2>/dev/null || die "$label: the server process $pid died (see $WORK/server.err)"
    wrk_cpu=$(tail -n1 "$tfile" | awk '{ printf "%.0f", ($1 + $2) * 1000 }')
    awk -v r="$result" -v s="$((s1 - s0))" -v m="$((m1 - m0))" -v t="$TICKS" -v w="$wrk_cpu" -v ld="$load" 'BEGIN {
        split(r, kv, " "); for (i in kv) { split(kv[i], p, "="); f[p[1]] = p[2] }
        server = s * 1000 / t; machine = m * 1000 / t; secs = f["seconds"]
        other = machine - server - w; if (other < 0) other = 0
        printf "%s server_cpu_ms=%.0f cpu_us_per_req=%.1f wrk_cpu_ms=%.0f wrk_us_per_req=%.1f other_cpu_pct=%.0f load=%s\n",
            r, server, f["requests"] ? server * 1000 / f["requests"] : 0, w,
            f["requests"] ? w * 1000 / f["requests"] : 0,
            secs ? other / (secs * 10) : 0, ld
    }'
}

# A measured run must have no bad answer and no socket error.
check_clean() {
    local label=$1 result=$2
    local errs=$(( $(field "$result" bad_status) + $(field "$result" bad_body) + $(field "$result" socket_errors) ))
    if ((errs)); then
        say "$label: $errs bad answers or socket errors: $result"
        grep '^FIRST_BAD' "$LOG" | tail -n1 >&2 || true
        INVALID+=("$label: $result")
    fi
}

median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

INVALID=()
LINKED_REPORTED=0

# Diagnosis: BENCH_PROFILE=SECONDS records a CPU profile of the server (perf, sampling) for that
# long from the start of the first repetition's measured runs (of the bare endpoint's server
# for the bare run), into
# bench/out/perf-<stamp>-<run>.data; read with `perf report -i FILE --no-children --sort symbol`.
# Profiled figures are not the service's figures (the sampling costs CPU); the results say so.
PROFILE=${BENCH_PROFILE:-}
profile() {
    [[ -n $PROFILE && $2 == 1 ]] || return 0
    command -v perf >/dev/null || die "BENCH_PROFILE needs perf (Debian package linux-perf)"
    perf record -q -e cpu-clock -F 999 -p "${3:-$SERVER_PID}" -o "$OUT/perf-$STAMP-$1.data" -- sleep "$PROFILE" \
        >/dev/null 2>&1 &
}

# --- pre-link the sign-in set (also the cold start: the credential cache is empty) ------------
MEM_IDLE_RSS=$(status_kb "$SERVER_PID" VmRSS)
say "pre-linking signin-0..$((SIGNIN - 1)) (cold start, $CONNS connections)"
for attempt in 1 2 3 4 5; do
    prelink=$(run_wrk "prelink$attempt" "$CONNECTOR" prelink "p$attempt" 8s "$SERVER_PID")
    check_clean "prelink$attempt" "$prelink"
    signin_links=$(sqlite3 "$DB" "SELECT count(*) FROM identity_links WHERE active AND subject LIKE 'signin-%'")
    [[ $signin_links == "$SIGNIN" ]] && break
done
MEM_COLD_HWM=$(status_kb "$SERVER_PID" VmHWM)
[[ $signin_links == "$SIGNIN" ]] || die "pre-linking made $signin_links links, not $SIGNIN"
say "pre-linked $signin_links identities; peak RSS so far ${MEM_COLD_HWM} kB"
# Reset the peak (VmHWM) so the steady state is measured apart from the cold start.
if echo 5 >"/proc/$SERVER_PID/clear_refs" 2>/dev/null; then HWM_RESET=yes; else HWM_RESET=no; fi

# --- measurements ------------------------------------------------------------------------------
declare -a C_RPS C_P50 C_P99 B_RPS B_LPS B_P50 B_P99 A_RPS A_P50 A_P99 RATIO C_CPU B_CPU A_CPU C_OTH B_OTH A_OTH C_WRK B_WRK A_WRK
for rep in $(seq 1 "$REPS"); do
    say "repetition $rep/$REPS: (c) bare"
    run_wrk "c$rep-warmup" "$BARE_URL/" bare w "$WARMUP" "$BARE_PID" >/dev/null
    profile c "$rep" "$BARE_PID"
    c=$(run_wrk "c$rep" "$BARE_URL/" bare m "$DURATION" "$BARE_PID")
    check_clean "c$rep" "$c"

    say "repetition $rep/$REPS: (b) sign-up"
    w=$(run_wrk "b$rep-warmup" "$CONNECTOR" signup "r${rep}w" "$WARMUP" "$SERVER_PID")
    LINKED_REPORTED=$((LINKED_REPORTED + $(field "$w" linked)))
    profile b "$rep"
    b=$(run_wrk "b$rep" "$CONNECTOR" signup "r$rep" "$DURATION" "$SERVER_PID")
    LINKED_REPORTED=$((LINKED_REPORTED + $(field "$b" linked)))
    check_clean "b$rep" "$b"

    say "repetition $rep/$REPS: (a) sign-in"
    run_wrk "a$rep-warmup" "$CONNECTOR" signin w "$WARMUP" "$SERVER_PID" >/dev/null
    profile a "$rep"
    a=$(run_wrk "a$rep" "$CONNECTOR" signin m "$DURATION" "$SERVER_PID")
    check_clean "a$rep" "$a"

    C_RPS+=("$(field "$c" rps)"); C_P50+=("$(field "$c" p50_ms)"); C_P99+=("$(field "$c" p99_ms)")
    B_RPS+=("$(field "$b" rps)"); B_LPS+=("$(field "$b" links_per_s)")
    B_P50+=("$(field "$b" p50_ms)"); B_P99+=("$(field "$b" p99_ms)")
    A_RPS+=("$(field "$a" rps)"); A_P50+=("$(field "$a" p50_ms)"); A_P99+=("$(field "$a" p99_ms)")
    C_CPU+=("$(field "$c" cpu_us_per_req)"); B_CPU+=("$(field "$b" cpu_us_per_req)"); A_CPU+=("$(field "$a" cpu_us_per_req)")
    C_OTH+=("$(field "$c" other_cpu_pct)"); B_OTH+=("$(field "$b" other_cpu_pct)"); A_OTH+=("$(field "$a" other_cpu_pct)")
    C_WRK+=("$(field "$c" wrk_us_per_req)"); B_WRK+=("$(field "$b" wrk_us_per_req)"); A_WRK+=("$(field "$a" wrk_us_per_req)")
    RATIO+=("$(awk -v a="$(field "$a" rps)" -v c="$(field "$c" rps)" 'BEGIN { printf "%.3f", a / c }')")
    say "  (c) $(field "$c" rps) req/s p99 $(field "$c" p99_ms) ms | (b) $(field "$b" links_per_s) links/s p99 $(field "$b" p99_ms) ms | (a) $(field "$a" rps) req/s p99 $(field "$a" p99_ms) ms"
done

MEM_STEADY_HWM=$(status_kb "$SERVER_PID" VmHWM)
MEM_END_RSS=$(status_kb "$SERVER_PID" VmRSS)
BARE_HWM=$(status_kb "$BARE_PID" VmHWM)
SERVER_THREADS=$(status_kb "$SERVER_PID" Threads)
MEM_PEAK=$(( MEM_COLD_HWM > MEM_STEADY_HWM ? MEM_COLD_HWM : MEM_STEADY_HWM ))

# The audit lookup merge runs at idle priority, so under a saturating load it falls behind:
# how many events it had still to index when the measurements ended (it catches up when the
# load falls, and at shutdown).
MERGE_BACKLOG=$(sqlite3 "$DB" "ATTACH '$DB.audit-lookup' AS l; SELECT (SELECT max(id) FROM audit_events) - (SELECT indexed_through FROM l.audit_lookup_state)" 2>/dev/null || echo '?')

# --- stop the server (the audit writer flushes) and verify the database -------------------------
STOP_STARTED=$(date +%s.%N)
kill -TERM "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
STOP_SECONDS=$(awk -v a="$STOP_STARTED" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
SERVER_PID=
kill -TERM "$BARE_PID"; wait "$BARE_PID" 2>/dev/null || true; BARE_PID=
q() { sqlite3 "$DB" "$1"; }
DB_SIGNUP_LINKS=$(q "SELECT count(*) FROM identity_links WHERE active AND subject LIKE 'signup-%'")
DB_SIGNIN_LINKS=$(q "SELECT count(*) FROM identity_links WHERE active AND subject LIKE 'signin-%'")
DB_CUSTOMERS=$(q "SELECT count(*) FROM customers")
DB_AUDIT_LINKED=$(q "SELECT count(*) FROM audit_events WHERE outcome = 'Linked' AND subject LIKE 'signup-%'")
DB_AUDIT=$(q "SELECT outcome || '=' || count(*) FROM audit_events GROUP BY outcome ORDER BY outcome" | tr '\n' ' ')
DB_DUP=$(q "SELECT count(*) FROM (SELECT issuer, subject FROM identity_links WHERE active GROUP BY 1, 2 HAVING count(*) > 1)")
DB_SIZE_KB=$(du -k "$DB" | cut -f1)
# wrk does not count answers still in flight when it stops, so the database may hold up to
# CONNS more links per sign-up run than the answers counted.
MAX_INFLIGHT=$((CONNS * REPS * 2))
LINK_GAP=$((DB_SIGNUP_LINKS - LINKED_REPORTED))
if ((LINK_GAP < 0 || LINK_GAP > MAX_INFLIGHT)); then
    INVALID+=("links: the database holds $DB_SIGNUP_LINKS sign-up links, the answers said $LINKED_REPORTED")
fi
[[ $DB_AUDIT_LINKED == "$DB_SIGNUP_LINKS" ]] || INVALID+=("audit: $DB_AUDIT_LINKED Linked events for $DB_SIGNUP_LINKS links")
[[ $DB_CUSTOMERS == "$CUSTOMERS" ]] || INVALID+=("customers: $DB_CUSTOMERS, expected $CUSTOMERS (none should be created)")
[[ $DB_DUP == 0 ]] || INVALID+=("$DB_DUP identities with more than one active link")
SERVER_LOG_LINES=$(wc -l <"$WORK/server.err")

# --- summary -------------------------------------------------------------------------------------
m() { median "$@"; }
mc_rps=$(m "${C_RPS[@]}"); ma_rps=$(m "${A_RPS[@]}"); mb_lps=$(m "${B_LPS[@]}")
ma_p99=$(m "${A_P99[@]}"); mratio=$(m "${RATIO[@]}")
verdict() { if awk "BEGIN { exit !($1) }"; then echo "met"; else echo "MISSED"; fi; }
V_RATIO=$(verdict "$mratio >= 0.5")
V_P99=$(verdict "$ma_p99 < 5")
V_LPS=$(verdict "$mb_lps >= 5000")
V_MEM=$(verdict "$MEM_PEAK < 65536")
V_MEM_STEADY=$(verdict "$MEM_STEADY_HWM < 65536")
list() { local IFS=' '; echo "$*"; }

{
    echo "# autolink connector benchmark, $STAMP"
    echo
    echo "Command: \`bash bench/run.sh\` (REPS=$REPS DURATION=$DURATION WARMUP=$WARMUP THREADS=$THREADS CONNECTIONS=$CONNS CUSTOMERS=$CUSTOMERS SIGNIN=$SIGNIN)"
    echo
    echo "Machine: $(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(uname -sr), load before: $(cut -d' ' -f1-3 /proc/loadavg); wrk runs on the same cores as the servers."
    echo "Code measured: $BUILD_TREE (binary sha256 $BUILD_SHA); $(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2); $(rustc --version)"
    echo "Import: $import_line"
    [[ -n $EXPERIMENT_SQL ]] && echo "EXPERIMENT (not the service's figures): applied \`$EXPERIMENT_SQL\` before starting the server."
    [[ -n $PROFILE ]] && echo "PROFILED (not the service's figures): perf sampled the servers for ${PROFILE} s of the first runs: bench/out/perf-$STAMP-{a,b,c}.data."
    echo "SQLite plan of the sign-in lookup (links::find_active): $PLAN_FIND_ACTIVE"
    env | grep -q '^MALLOC_' && echo "Allocator settings in the environment (not the defaults): $(env | grep '^MALLOC_' | tr '\n' ' ')"
    echo
    echo "| measurement | req/s (median) | p50 ms | p99 ms | server CPU µs/req | wrk CPU µs/req | other processes' CPU, % of a core | per repetition (req/s) |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
    echo "| (c) bare JSON POST | $mc_rps | $(m "${C_P50[@]}") | $(m "${C_P99[@]}") | $(m "${C_CPU[@]}") | $(m "${C_WRK[@]}") | $(list "${C_OTH[@]}") | $(list "${C_RPS[@]}") |"
    echo "| (b) sign-up (attribute + token step) | $(m "${B_RPS[@]}") | $(m "${B_P50[@]}") | $(m "${B_P99[@]}") | $(m "${B_CPU[@]}") | $(m "${B_WRK[@]}") | $(list "${B_OTH[@]}") | $(list "${B_RPS[@]}") |"
    echo "| (a) sign-in (token step, linked) | $ma_rps | $(m "${A_P50[@]}") | $ma_p99 | $(m "${A_CPU[@]}") | $(m "${A_WRK[@]}") | $(list "${A_OTH[@]}") | $(list "${A_RPS[@]}") |"
    echo
    echo "| target | measured (median of $REPS) | verdict |"
    echo "| --- | --- | --- |"
    echo "| (a) >= 50% of (c) req/s | $(awk -v r="$mratio" 'BEGIN { printf "%.1f%%", r * 100 }') (per repetition: $(list "${RATIO[@]}")) | $V_RATIO |"
    echo "| (a) p99 < 5 ms at $CONNS connections | $ma_p99 ms (per repetition: $(list "${A_P99[@]}")) | $V_P99 |"
    echo "| (b) >= 5,000 new links/s | $mb_lps links/s (per repetition: $(list "${B_LPS[@]}")) | $V_LPS |"
    echo "| resident memory < 64 MB, whole run | peak ${MEM_PEAK} kB ($(awk -v k="$MEM_PEAK" 'BEGIN { printf "%.1f", k / 1024 }') MiB) | $V_MEM |"
    echo "| resident memory < 64 MB, after the cold start | peak ${MEM_STEADY_HWM} kB ($(awk -v k="$MEM_STEADY_HWM" 'BEGIN { printf "%.1f", k / 1024 }') MiB; peak reset: $HWM_RESET) | $V_MEM_STEADY |"
    echo
    echo "Memory (kB): idle RSS $MEM_IDLE_RSS; peak during the cold start (pre-link, $CONNS connections, empty credential cache) $MEM_COLD_HWM; peak after it $MEM_STEADY_HWM; RSS at the end $MEM_END_RSS; server threads $SERVER_THREADS; bare_json peak $BARE_HWM."
    echo "Pre-link run: $prelink"
    echo "Database after the runs: $DB_CUSTOMERS customers; $DB_SIGNIN_LINKS sign-in links; $DB_SIGNUP_LINKS sign-up links (answers counted $LINKED_REPORTED, gap $LINK_GAP, at most $MAX_INFLIGHT in flight); $DB_AUDIT_LINKED Linked audit events; audit by outcome: $DB_AUDIT; duplicate active identities $DB_DUP; file ${DB_SIZE_KB} kB."
    echo "Audit lookup merge: $MERGE_BACKLOG events not yet indexed when the measurements ended (found by a scan until merged); the server stopped in $STOP_SECONDS s, its last merge included."
    echo "Server log lines at warn and above: $SERVER_LOG_LINES$( ((SERVER_LOG_LINES)) && printf '; first: %s' "$(head -n3 "$WORK/server.err" | tr '\n' ' ')")"
    if ((${#INVALID[@]})); then
        echo
        echo "INVALID RUN:"
        printf -- '- %s\n' "${INVALID[@]}"
    fi
    echo
    echo "Raw wrk output: bench/out/$(basename "$LOG")"
} | tee "$RESULTS"

say "results: $RESULTS"
((${#INVALID[@]} == 0)) || exit 2
