# Sourced by bench/run.sh: starting the servers, one wrk run with its CPU accounting, medians.
#
# Uses the globals of run.sh: WORK, LOG, OUT, STAMP, LUA, THREADS, CONNS, AUTH, CLIENT_ID,
# SIGNIN, CUSTOMERS, PROFILE, and BACKEND (the backend being measured, for its database's CPU).

say() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }

# Waits for "<name> listening on http://HOST:PORT" in a file and prints the URL.
wait_listening() {
    local file=$1 pid=$2 url=
    for _ in $(seq 1 600); do
        url=$(sed -n 's/.* listening on \(http:[^ ]*\).*/\1/p' "$file" | head -n1)
        [[ -n $url ]] && { echo "$url"; return 0; }
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
# User + system CPU time of a process, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null; }
TICKS=$(getconf CLK_TCK)
# Busy CPU time of the whole machine (all cores), in clock ticks.
machine_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
# The value of KEY in a line of KEY=VALUE words.
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<" $1"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
list() { local IFS=' '; echo "$*"; }
median() {
    printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 }
        END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
# "met" when the awk condition holds, "MISSED" otherwise.
verdict() { if awk "BEGIN { exit !($1) }"; then echo "met"; else echo "MISSED"; fi; }

# run_wrk LABEL URL MODE TAG DURATION PID [db] -> prints the RESULT line of bench/connector.lua
# plus the CPU that the server, wrk, the database server (with `db`, when it is a process of this
# machine: PostgreSQL's backends for the benchmark's database) and everything else on the machine
# used during the run.
run_wrk() {
    local label=$1 url=$2 mode=$3 tag=$4 duration=$5 pid=$6 with_db=${7:-}
    local out result tfile load s0 s1 m0 m1 wrk_cpu db_before= db_ms=-
    tfile=$WORK/time.$label
    load=$(cut -d' ' -f1 /proc/loadavg)
    [[ -n $with_db ]] && db_before=$(db cpu_snapshot)
    s0=$(cpu_ticks "$pid"); m0=$(machine_ticks)
    out=$( { TIMEFORMAT='%U %S'; time wrk -t"$THREADS" -c"$CONNS" -d"$duration" --latency -s "$LUA" "$url" -- \
        "$mode" "$tag" "$AUTH" "$CLIENT_ID" "$SIGNIN" "$CUSTOMERS"; } 2>"$tfile")
    s1=$(cpu_ticks "$pid"); m1=$(machine_ticks)
    [[ -n $with_db ]] && db_ms=$(db cpu_ms_since "$db_before")
    {
        echo "===== $BACKEND $label ($mode, tag $tag, $duration) $(date -Is) load $load"
        echo "\$ wrk -t$THREADS -c$CONNS -d$duration --latency -s bench/connector.lua $url -- $mode $tag <auth> $CLIENT_ID $SIGNIN $CUSTOMERS"
        echo "$out"
    } >>"$LOG"
    result=$(grep '^RESULT ' <<<"$out") || die "$BACKEND $label: no RESULT line (see $LOG)"
    kill -0 "$pid" 2>/dev/null || die "$BACKEND $label: the server process $pid died (see $WORK)"
    wrk_cpu=$(tail -n1 "$tfile" | awk '{ printf "%.0f", ($1 + $2) * 1000 }')
    awk -v r="$result" -v s="$((s1 - s0))" -v m="$((m1 - m0))" -v t="$TICKS" -v w="$wrk_cpu" \
        -v d="$db_ms" -v ld="$load" 'BEGIN {
        split(r, kv, " "); for (i in kv) { split(kv[i], p, "="); f[p[1]] = p[2] }
        server = s * 1000 / t; machine = m * 1000 / t; secs = f["seconds"]; n = f["requests"]
        db = (d ~ /^[0-9.]+$/) ? d : 0
        other = machine - server - w - db; if (other < 0) other = 0
        printf "%s server_cpu_ms=%.0f cpu_us_per_req=%.1f wrk_cpu_ms=%.0f wrk_us_per_req=%.1f ",
            r, server, n ? server * 1000 / n : 0, w, n ? w * 1000 / n : 0
        if (d ~ /^[0-9.]+$/) printf "db_cpu_ms=%.0f db_us_per_req=%.1f ", d, n ? d * 1000 / n : 0
        else printf "db_cpu_ms=%s db_us_per_req=%s ", d, d
        printf "other_cpu_pct=%.0f load=%s\n", secs ? other / (secs * 10) : 0, ld
    }'
}

# A measured run must have no bad answer and no socket error.
check_clean() {
    local label=$1 result=$2
    local errs=$(( $(field "$result" bad_status) + $(field "$result" bad_body) + $(field "$result" socket_errors) ))
    if ((errs)); then
        say "$BACKEND $label: $errs bad answers or socket errors: $result"
        grep '^FIRST_BAD' "$LOG" | tail -n1 >&2 || true
        INVALID+=("$label: $result")
    fi
}

# Diagnosis: BENCH_PROFILE=SECONDS records a CPU profile of a server (perf, sampling) for that
# long from the start of the first repetition's measured runs (of the bare endpoint's server for
# the bare run), into bench/out/perf-<stamp>-<backend>-<run>.data; read with
# `perf report -i FILE --no-children --sort symbol`. Profiled figures are not the service's
# figures (the sampling costs CPU); the results say so. BENCH_PROFILE_CALLS=1 records call
# graphs too (`perf report --no-children -G`; kernel stacks are whole, the service's are not).
profile() {
    [[ -n $PROFILE && $2 == 1 ]] || return 0
    command -v perf >/dev/null || die "BENCH_PROFILE needs perf (Debian package linux-perf)"
    perf record -q -e cpu-clock -F 999 ${BENCH_PROFILE_CALLS:+-g} -p "${3:-$SERVER_PID}" -o "$OUT/perf-$STAMP-$BACKEND-$1.data" -- sleep "$PROFILE" \
        >/dev/null 2>&1 &
}

# The SQL that appends N audit events of earlier sign-ins (BENCH_AUDIT_EVENTS), for backend
# sqlite or postgres: event i is customer k = i * 7919 mod CUSTOMERS (every customer, about
# N / CUSTOMERS events each, spread over the log) signing in as identity hist-<k> of the tenant,
# four events a second from 2026-01-01; one in twenty is a Linked event with its account number.
prefill_audit_sql() {
    local backend=$1 n=$2 rows time k
    if [[ $backend == sqlite ]]; then
        rows="WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < $n - 1) SELECT i FROM s"
        time="datetime('2026-01-01', '+' || (i / 4) || ' seconds')"
    else
        rows="SELECT i FROM generate_series(0::bigint, $n - 1) AS s(i)"
        time="timestamp '2026-01-01' + (i / 4) * interval '1 second'"
    fi
    k="((i * 7919) % $CUSTOMERS)"
    echo "INSERT INTO audit_events (at, request_id, actor, source, step, channel, outcome, code, email_key, issuer, subject, account_number, detail)
        SELECT $time, 'prefill-' || i, 'b2c', 'api-connector', 'PreTokenIssuance', 'web',
               CASE WHEN i % 20 = 0 THEN 'Linked' ELSE 'AlreadyLinked' END, NULL,
               'customer' || $k || '@example.com', '$TENANT_ISSUER', 'hist-' || $k,
               CASE WHEN i % 20 = 0 THEN 'C' || $k END, NULL
        FROM ($rows) AS n"
}

# Times of an administrator's audit queries through the admin API, while the server runs after
# the measurements: for each of SAMPLES customers (spread over the set), one query by email and
# one by identity (issuer and subject), first page of 50. Prints "email_ms=MEDIAN/MAX
# identity_ms=MEDIAN/MAX" over the samples, for identities of the sign-in set (events of the run)
# and of the prefilled log (hist-<k>).
audit_query_times() {
    local url=$1 samples=${BENCH_AUDIT_SAMPLES:-15} i k t email_run=() id_run=() email_old=() id_old=() issuer
    issuer=$(printf '%s' "$TENANT_ISSUER" | sed 's/:/%3A/g; s#/#%2F#g')
    q() {
        curl -fsS -o /dev/null -w '%{time_total}' -H "Authorization: Bearer bench-admin-token" "$url/admin/v1/audit?$1" \
            | awk '{ printf "%.1f", $1 * 1000 }'
    }
    for ((i = 0; i < samples; i++)); do
        k=$((i * (SIGNIN / samples)))
        email_run+=("$(q "email=customer$k%40example.com")")
        id_run+=("$(q "issuer=$issuer&subject=signin-$k")")
        k=$((SIGNIN + i * ((CUSTOMERS - SIGNIN) / samples)))
        email_old+=("$(q "email=customer$k%40example.com")")
        id_old+=("$(q "issuer=$issuer&subject=hist-$k")")
    done
    mm() { echo "$(median "$@")/$(printf '%s\n' "$@" | sort -g | tail -n1)"; }
    echo "signin_email_ms=$(mm "${email_run[@]}") signin_identity_ms=$(mm "${id_run[@]}") old_email_ms=$(mm "${email_old[@]}") old_identity_ms=$(mm "${id_old[@]}")"
}
