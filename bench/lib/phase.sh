# Sourced by bench/run.sh: one backend's part of the run, from an empty database to its section
# of the results. Uses the globals of run.sh and the helpers of measure.sh.

# The targets of issue 15 per backend: sign-in's least share of bare, and the most p99 (ms) at
# the run's connections. Both backends: >= 5,000 new links/s and a peak RSS under 64 MiB.
min_ratio() { case $1 in postgres) echo 0.40 ;; *) echo 0.50 ;; esac; }
max_p99_ms() { case $1 in postgres) echo 8 ;; *) echo 5 ;; esac; }
MIN_LINKS_PER_S=5000
MAX_RSS_KB=65536

# The server's configuration for a database URL.
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
username = "$USER_NAME"
password_hash = "$PASSWORD_HASH"

[admin]
token_hash = "$ADMIN_TOKEN_HASH"
EOF
    # BENCH_WEBHOOK=compare: the second measurement of each backend has a webhook whose
    # endpoint is down (nothing listens on its port: every attempt fails at once and is
    # scheduled again, the most work a dead endpoint can make the dispatcher do).
    if [[ -n ${WEBHOOK_URL:-} ]]; then
        cat <<EOF

[[webhooks]]
url = "$WEBHOOK_URL"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
EOF
    fi
}

seconds_since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# measure_backend sqlite|postgres: loads the customers into a new database, starts
# `autolink serve` on it, pre-links the sign-in set, measures REPS repetitions of (c) bare,
# (b) sign-up and (a) sign-in, stops the server, checks the database, and appends the backend's
# section to RESULTS and its line to SUMMARY.
measure_backend() {
    BACKEND=$1
    INVALID=()
    LINKED_REPORTED=0
    local title dir t0 load_line load_s prepare_line= prepare_s= settle_line= settle_s= plan describe experiment=${BENCH_EXPERIMENT_SQL:-}
    title=$(db title)${VARIANT:+, $VARIANT}
    dir=$WORK/$BACKEND${VARIANT:+-webhook}
    mkdir -p "$dir"
    say "== $title"
    db create
    CONFIG=$dir/autolink.toml
    write_config "$DB_URL" >"$CONFIG"

    say "$title: loading $CUSTOMERS customers"
    t0=$(date +%s.%N)
    load_line=$(db load) || die "$title: loading the customers failed"
    load_s=$(seconds_since "$t0")
    say "$title: $load_line ($load_s s)"
    [[ $(db query 'SELECT count(*) FROM customers') == "$CUSTOMERS" ]] || die "$title: the load did not give $CUSTOMERS customers"
    local audit_events=${BENCH_AUDIT_EVENTS:-0} prefill_line= prefill_s=
    if ((audit_events > 0)); then
        say "$title: appending $audit_events audit events in SQL"
        t0=$(date +%s.%N)
        prefill_line=$(db prefill_audit "$audit_events") || die "$title: the audit prefill failed"
        prefill_s=$(seconds_since "$t0")
        say "$title: $prefill_line ($prefill_s s)"
    fi
    t0=$(date +%s.%N)
    prepare_line=$(db prepare)
    [[ -n $prepare_line ]] && prepare_s=$(seconds_since "$t0")
    # Diagnostic only: SQL applied to the database before the server starts (e.g. an index being
    # considered). Figures taken with it are not the service's figures; the results say so.
    if [[ -n $experiment ]]; then
        say "EXPERIMENT: applying $experiment"
        db query "$experiment" >/dev/null
    fi
    describe=$(db describe)

    # --- the server --------------------------------------------------------------------------
    RUST_LOG=warn "$AUTOLINK" --config "$CONFIG" serve >"$dir/server.out" 2>"$dir/server.err" &
    SERVER_PID=$!
    local server_url connector
    server_url=$(wait_listening "$dir/server.out" "$SERVER_PID") || { cat "$dir/server.err" >&2; die "$title: autolink did not start"; }
    connector=$server_url/b2c/api-connector
    say "$title: autolink $server_url (pid $SERVER_PID)"

    # --- pre-link the sign-in set (also the cold start: the credential cache is empty) ----------
    local mem_idle mem_cold mem_steady mem_end mem_peak bare_hwm threads hwm_reset prelink signin_links=0 attempt
    mem_idle=$(status_kb "$SERVER_PID" VmRSS)
    say "$title: pre-linking signin-0..$((SIGNIN - 1)) (cold start, $CONNS connections)"
    # Each wrk run walks the set from its start again: when a run did not reach its end, the next
    # one is long enough to walk all of it at the rate the last one had (at most 120 s).
    local prelink_s=8
    for attempt in 1 2 3 4 5; do
        prelink=$(run_wrk "prelink$attempt" "$connector" prelink "p$attempt" "${prelink_s}s" "$SERVER_PID" db)
        check_clean "prelink$attempt" "$prelink"
        signin_links=$(db query "SELECT count(*) FROM identity_links WHERE active AND subject LIKE 'signin-%'")
        [[ $signin_links == "$SIGNIN" ]] && break
        prelink_s=$(awk -v n="$SIGNIN" -v r="$(field "$prelink" rps)" 'BEGIN {
            s = r > 0 ? int(1.5 * n / r) + 2 : 120; print (s < 8 ? 8 : (s > 120 ? 120 : s)) }')
        say "$title: $signin_links of $SIGNIN linked; pre-linking again for $prelink_s s"
    done
    mem_cold=$(status_kb "$SERVER_PID" VmHWM)
    [[ $signin_links == "$SIGNIN" ]] || die "$title: pre-linking made $signin_links links, not $SIGNIN"
    say "$title: pre-linked $signin_links identities; peak RSS so far $mem_cold kB"
    t0=$(date +%s.%N)
    settle_line=$(db settle)
    [[ -n $settle_line ]] && settle_s=$(seconds_since "$t0")
    plan=$(db plan)
    # Reset the peak (VmHWM) so the steady state is seen apart from the cold start; the whole
    # run's peak is the larger of the two.
    if echo 5 >"/proc/$SERVER_PID/clear_refs" 2>/dev/null; then hwm_reset=yes; else hwm_reset=no; fi

    # --- measurements ----------------------------------------------------------------------------
    local -a c_rps c_p50 c_p99 b_rps b_lps b_p50 b_p99 a_rps a_p50 a_p99 ratio
    local -a c_cpu b_cpu a_cpu b_db a_db c_oth b_oth a_oth c_wrk b_wrk a_wrk
    local rep a b c w v
    for rep in $(seq 1 "$REPS"); do
        say "$title: repetition $rep/$REPS: (c) bare"
        run_wrk "c$rep-warmup" "$BARE_URL/" bare w "$WARMUP" "$BARE_PID" >/dev/null
        profile c "$rep" "$BARE_PID"
        c=$(run_wrk "c$rep" "$BARE_URL/" bare m "$DURATION" "$BARE_PID")
        check_clean "c$rep" "$c"

        say "$title: repetition $rep/$REPS: (b) sign-up"
        w=$(run_wrk "b$rep-warmup" "$connector" signup "r${rep}w" "$WARMUP" "$SERVER_PID")
        LINKED_REPORTED=$((LINKED_REPORTED + $(field "$w" linked)))
        profile b "$rep"
        b=$(run_wrk "b$rep" "$connector" signup "r$rep" "$DURATION" "$SERVER_PID" db)
        LINKED_REPORTED=$((LINKED_REPORTED + $(field "$b" linked)))
        check_clean "b$rep" "$b"

        say "$title: repetition $rep/$REPS: (a) sign-in"
        run_wrk "a$rep-warmup" "$connector" signin w "$WARMUP" "$SERVER_PID" >/dev/null
        profile a "$rep"
        a=$(run_wrk "a$rep" "$connector" signin m "$DURATION" "$SERVER_PID" db)
        check_clean "a$rep" "$a"

        c_rps+=("$(field "$c" rps)"); c_p50+=("$(field "$c" p50_ms)"); c_p99+=("$(field "$c" p99_ms)")
        b_rps+=("$(field "$b" rps)"); b_lps+=("$(field "$b" links_per_s)")
        b_p50+=("$(field "$b" p50_ms)"); b_p99+=("$(field "$b" p99_ms)")
        a_rps+=("$(field "$a" rps)"); a_p50+=("$(field "$a" p50_ms)"); a_p99+=("$(field "$a" p99_ms)")
        c_cpu+=("$(field "$c" cpu_us_per_req)"); b_cpu+=("$(field "$b" cpu_us_per_req)"); a_cpu+=("$(field "$a" cpu_us_per_req)")
        b_db+=("$(field "$b" db_us_per_req)"); a_db+=("$(field "$a" db_us_per_req)")
        c_oth+=("$(field "$c" other_cpu_pct)"); b_oth+=("$(field "$b" other_cpu_pct)"); a_oth+=("$(field "$a" other_cpu_pct)")
        c_wrk+=("$(field "$c" wrk_us_per_req)"); b_wrk+=("$(field "$b" wrk_us_per_req)"); a_wrk+=("$(field "$a" wrk_us_per_req)")
        # The share of bare in this repetition: sign-in against the bare run just before it.
        ratio+=("$(awk -v a="$(field "$a" rps)" -v c="$(field "$c" rps)" 'BEGIN { printf "%.3f", a / c }')")
        say "$title:   (c) $(field "$c" rps) req/s p99 $(field "$c" p99_ms) ms | (b) $(field "$b" links_per_s) links/s p99 $(field "$b" p99_ms) ms | (a) $(field "$a" rps) req/s p99 $(field "$a" p99_ms) ms"
    done

    mem_steady=$(status_kb "$SERVER_PID" VmHWM)
    mem_end=$(status_kb "$SERVER_PID" VmRSS)
    bare_hwm=$(status_kb "$BARE_PID" VmHWM)
    threads=$(status_kb "$SERVER_PID" Threads)
    mem_peak=$((mem_cold > mem_steady ? mem_cold : mem_steady))
    # The pool as the server reports it (its settings come from the configuration's defaults
    # unless AUTOLINK_DATABASE__* is set: see the environment line).
    local pool after
    pool=$(curl -fsS "$server_url/metrics" 2>/dev/null | awk '$1 ~ /^autolink_db_pool_/ {
        sub("^autolink_db_pool_", "", $1); printf "%s%s %s", sep, $1, $2; sep = ", " }')
    after=$(db after_measure)
    local audit_times
    say "$title: timing administrators' audit queries"
    audit_times=$(audit_query_times "$server_url")
    say "$title: audit queries (median/max ms): $audit_times"

    # --- stop the server (the audit writer flushes) and check the database ----------------------
    local stop_started stop_s
    stop_started=$(date +%s.%N)
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    stop_s=$(seconds_since "$stop_started")
    SERVER_PID=
    local db_signup db_signin db_customers db_audit_linked db_audit db_dup db_size max_inflight link_gap log_lines
    db_signup=$(db query "SELECT count(*) FROM identity_links WHERE active AND subject LIKE 'signup-%'")
    db_signin=$(db query "SELECT count(*) FROM identity_links WHERE active AND subject LIKE 'signin-%'")
    db_customers=$(db query "SELECT count(*) FROM customers")
    db_audit_linked=$(db query "SELECT count(*) FROM audit_events WHERE outcome = 'Linked' AND subject LIKE 'signup-%'")
    db_audit=$(db query "SELECT outcome || '=' || count(*) FROM audit_events GROUP BY outcome ORDER BY outcome" | tr '\n' ' ')
    db_dup=$(db query "SELECT count(*) FROM (SELECT issuer, subject FROM identity_links WHERE active GROUP BY 1, 2 HAVING count(*) > 1) d")
    db_size=$(db size)
    db drop
    # wrk does not count answers still in flight when it stops, so the database may hold up to
    # CONNS more links per sign-up run than the answers counted.
    max_inflight=$((CONNS * REPS * 2))
    link_gap=$((db_signup - LINKED_REPORTED))
    if ((link_gap < 0 || link_gap > max_inflight)); then
        INVALID+=("links: the database holds $db_signup sign-up links, the answers said $LINKED_REPORTED")
    fi
    [[ $db_audit_linked == "$db_signup" ]] || INVALID+=("audit: $db_audit_linked Linked events for $db_signup links")
    [[ $db_customers == "$CUSTOMERS" ]] || INVALID+=("customers: $db_customers, expected $CUSTOMERS (none should be created)")
    [[ $db_dup == 0 ]] || INVALID+=("$db_dup identities with more than one active link")
    log_lines=$(wc -l <"$dir/server.err")

    # --- this backend's section -------------------------------------------------------------------
    m() { median "$@"; }
    local mc_rps ma_rps mb_lps ma_p99 mratio target_ratio target_p99 v_ratio v_p99 v_lps v_mem v_steady met=0 valid=yes
    mc_rps=$(m "${c_rps[@]}"); ma_rps=$(m "${a_rps[@]}"); mb_lps=$(m "${b_lps[@]}")
    ma_p99=$(m "${a_p99[@]}"); mratio=$(m "${ratio[@]}")
    target_ratio=$(min_ratio "$BACKEND"); target_p99=$(max_p99_ms "$BACKEND")
    v_ratio=$(verdict "$mratio >= $target_ratio")
    v_p99=$(verdict "$ma_p99 < $target_p99")
    v_lps=$(verdict "$mb_lps >= $MIN_LINKS_PER_S")
    v_mem=$(verdict "$mem_peak < $MAX_RSS_KB")
    v_steady=$(verdict "$mem_steady < $MAX_RSS_KB")
    for v in "$v_ratio" "$v_p99" "$v_lps" "$v_mem"; do [[ $v == met ]] && met=$((met + 1)); done
    ((${#INVALID[@]} == 0)) || { valid=no; RUN_INVALID=1; }
    local pct
    pct=$(awk -v r="$target_ratio" 'BEGIN { printf "%d%%", r * 100 }')
    {
        echo
        echo "## $title"
        echo
        echo "Database: $describe."
        echo "Load: $load_line, in $load_s s ($(awk -v n="$CUSTOMERS" -v s="$load_s" 'BEGIN { printf "%d", (s > 0 ? n / s : 0) }') rows/s, process start and migrations included)$([[ -n $prepare_line ]] && echo "; then $prepare_line, in $prepare_s s")."
        [[ -n $experiment ]] && echo "EXPERIMENT (not the service's figures): applied \`$experiment\` before starting the server."
        [[ -n $prefill_line ]] && echo "Audit log before the server started: $prefill_line, in $prefill_s s."
        [[ -n $settle_line ]] && echo "After the pre-link: $settle_line, in $settle_s s."
        echo "Plan of the sign-in lookup (links::find_active): $plan"
        echo "Server pool (from /metrics at the end of the measurements): ${pool:-not reported}; server threads $threads."
        [[ -n $after ]] && echo "$after"
        echo "Administrators' audit queries after the measurements (admin API, first page of 50, median/max ms over ${BENCH_AUDIT_SAMPLES:-15} customers each; signin: identities of the sign-in set, whose events the run wrote; old: customers with prefilled events only): $audit_times."
        echo
        echo "| measurement | req/s (median) | p50 ms | p99 ms | server CPU µs/req | database CPU µs/req | wrk CPU µs/req | other processes' CPU, % of a core | per repetition (req/s) |"
        echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        echo "| (c) bare JSON POST | $mc_rps | $(m "${c_p50[@]}") | $(m "${c_p99[@]}") | $(m "${c_cpu[@]}") | - | $(m "${c_wrk[@]}") | $(list "${c_oth[@]}") | $(list "${c_rps[@]}") |"
        echo "| (b) sign-up (attribute + token step) | $(m "${b_rps[@]}") | $(m "${b_p50[@]}") | $(m "${b_p99[@]}") | $(m "${b_cpu[@]}") | $(db_median "${b_db[@]}") | $(m "${b_wrk[@]}") | $(list "${b_oth[@]}") | $(list "${b_rps[@]}") |"
        echo "| (a) sign-in (token step, linked) | $ma_rps | $(m "${a_p50[@]}") | $ma_p99 | $(m "${a_cpu[@]}") | $(db_median "${a_db[@]}") | $(m "${a_wrk[@]}") | $(list "${a_oth[@]}") | $(list "${a_rps[@]}") |"
        echo
        echo "| target ($title, issue 15) | measured (median of $REPS) | verdict |"
        echo "| --- | --- | --- |"
        echo "| (a) >= $pct of (c) req/s, per repetition | $(awk -v r="$mratio" 'BEGIN { printf "%.1f%%", r * 100 }') (per repetition: $(list "${ratio[@]}")) | $v_ratio |"
        echo "| (a) p99 < $target_p99 ms at $CONNS connections | $ma_p99 ms (per repetition: $(list "${a_p99[@]}")) | $v_p99 |"
        echo "| (b) >= 5,000 new links/s | $mb_lps links/s (per repetition: $(list "${b_lps[@]}")) | $v_lps |"
        echo "| resident memory < 64 MB, whole run (VmHWM) | peak $mem_peak kB ($(mib "$mem_peak") MiB) | $v_mem |"
        echo "| (for diagnosis) the same after the cold start | peak $mem_steady kB ($(mib "$mem_steady") MiB; peak reset: $hwm_reset) | $v_steady |"
        echo
        echo "Memory (kB): idle RSS $mem_idle; peak during the cold start (pre-link, $CONNS connections, empty credential cache) $mem_cold; peak after it $mem_steady; RSS at the end $mem_end; bare_json peak $bare_hwm."
        echo "Pre-link run: $prelink"
        echo "Database after the runs: $db_customers customers; $db_signin sign-in links; $db_signup sign-up links (answers counted $LINKED_REPORTED, gap $link_gap, at most $max_inflight in flight); $db_audit_linked Linked audit events; audit by outcome: $db_audit; duplicate active identities $db_dup; $db_size."
        echo "The server stopped in $stop_s s after SIGTERM. Server log lines at warn and above: $log_lines$( ((log_lines)) && printf '; first: %s' "$(head -n3 "$dir/server.err" | tr '\n' ' ')")"
        if ((${#INVALID[@]})); then
            echo
            echo "INVALID RUN ($title):"
            printf -- '- %s\n' "${INVALID[@]}"
        fi
    } | tee -a "$RESULTS"
    SUMMARY+=("| $title | $mc_rps | $ma_rps, $(awk -v r="$mratio" 'BEGIN { printf "%.1f%%", r * 100 }') ($v_ratio) | $ma_p99 ms ($v_p99) | $mb_lps ($v_lps) | $(mib "$mem_peak") MiB ($v_mem) | $met of 4 | $valid |")
}

# The median of database CPU figures, or "-" (in the server) / "?" (not measured) as given.
db_median() {
    if [[ $1 =~ ^[0-9.]+$ ]]; then median "$@"; else echo "${1:--}"; fi
}
