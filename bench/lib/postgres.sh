# Sourced by bench/run.sh: the PostgreSQL backend. The run creates a database of its own on the
# server of BENCH_POSTGRES_URL (autolink_bench_<stamp>), reads it with psql, and drops it at the
# end unless BENCH_KEEP=1. Each function is called through `db NAME` while BACKEND=postgres.
#
# BENCH_POSTGRES_URL (postgres://postgres@127.0.0.1:5432/postgres): a database on the server
# that psql connects to in order to create and drop the benchmark's own; its user must be
# allowed to create databases.

PG_ADMIN_URL=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PG_DBNAME=
PG_LOCAL=0

postgres_title() { echo "PostgreSQL"; }
postgres_tools() { echo "psql:postgresql-client"; }

# The URL without its password, for the results.
redact_url() { sed 's#^\([a-z]*://[^:/@]*\):[^@]*@#\1:***@#' <<<"$1"; }
# The URL with another database: postgres://user@host:port/DB?params.
url_with_database() {
    sed -E 's#^([a-z]+://[^/?]*)(/[^?]*)?(\?.*)?$#\1/'"$2"'\3#' <<<"$1"
}
psql_admin() { psql "$PG_ADMIN_URL" -X -q -At -v ON_ERROR_STOP=1 "$@"; }
psql_bench() { psql "$PG_BENCH_URL" -X -q -At -v ON_ERROR_STOP=1 "$@"; }

# Creates the benchmark's database; sets DB_URL.
postgres_create() {
    psql_admin -c 'SELECT 1' >/dev/null || die "cannot connect to $(redact_url "$PG_ADMIN_URL") with psql"
    PG_DBNAME=autolink_bench_${STAMP//-/_}
    PG_BENCH_URL=$(url_with_database "$PG_ADMIN_URL" "$PG_DBNAME")
    psql_admin -c "CREATE DATABASE $PG_DBNAME" || die "could not create the database $PG_DBNAME"
    DB_URL=$PG_BENCH_URL
    # Whether the server's processes are this machine's (then their CPU is measured).
    local pid
    pid=$(psql_admin -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'")
    [[ -n $pid && $(cat "/proc/$pid/comm" 2>/dev/null) == postgres ]] && PG_LOCAL=1
    say "created the database $PG_DBNAME on $(redact_url "$PG_ADMIN_URL")"
}

postgres_query() { psql_bench -c "$1"; }

# The customers through `autolink customers import` (one transaction of multi-row inserts).
postgres_load() {
    RUST_LOG=warn "$AUTOLINK" --config "$CONFIG" customers import "$CSV"
}

# After the load: the customers' statistics and visibility map, which autovacuum would make
# within a minute or so, made now so that every run starts from the same state. Only customers:
# a VACUUM of the empty identity_links would record it as empty (reltuples 0), and the sign-in
# lookup's generic plan would then scan that table until its next ANALYZE.
postgres_prepare() {
    psql_bench -c "VACUUM (ANALYZE) customers"
    echo "VACUUM (ANALYZE) customers after the load"
}

# BENCH_AUDIT_EVENTS: N events of earlier sign-ins appended in SQL (see prefill_audit_sql), then
# the table's statistics and visibility map, as autovacuum would make them.
postgres_prefill_audit() {
    psql_bench -c "$(prefill_audit_sql postgres "$1")" -c "VACUUM (ANALYZE) audit_events"
    echo "$1 audit events of earlier sign-ins appended in SQL, then VACUUM (ANALYZE) audit_events"
}

# After the pre-link: the statistics that autovacuum's ANALYZE would give after that many new
# links and events, made now rather than at a random time during the measurements.
postgres_settle() {
    psql_bench -c "ANALYZE"
    echo "ANALYZE"
}

postgres_describe() {
    local version settings where
    version=$(psql_admin -c "SHOW server_version")
    settings=$(psql_admin -c "SELECT name || '=' || current_setting(name) FROM pg_settings WHERE name IN ('max_connections', 'shared_buffers', 'synchronous_commit', 'fsync', 'ssl', 'max_wal_size') ORDER BY name" | paste -sd ' ' -)
    if ((PG_LOCAL)); then where="on this machine (its processes share the cores)"; else where="not a process of this machine"; fi
    local fate="dropped at the end"
    [[ ${BENCH_KEEP:-0} == 1 ]] && fate="kept (BENCH_KEEP=1)"
    echo "PostgreSQL $version at $(redact_url "$PG_ADMIN_URL" | sed -E 's#^([a-z]+://[^/?]*).*#\1#'), $where; database $PG_DBNAME, $fate; $settings"
}

# The generic plan of the sign-in lookup (storage::links::find_active), as a prepared statement
# gets it once PostgreSQL stops planning each call.
postgres_plan() {
    psql_bench -c "SET plan_cache_mode = force_generic_plan" \
        -c 'PREPARE find_active(text, text, boolean) AS SELECT customers.id, customers.account_number FROM identity_links INNER JOIN customers ON identity_links.customer_id = customers.id WHERE identity_links.issuer = $1 AND identity_links.subject = $2 AND identity_links.active = $3' \
        -c "EXPLAIN (COSTS OFF) EXECUTE find_active('i', 's', true)" | sed 's/^ *//; s/^-> *//' | paste -sd ';' -
}

# "pid ticks" of each backend process connected to the benchmark's database (the server's
# connections; psql_admin's own is in another database). Empty when PostgreSQL is elsewhere.
postgres_cpu_snapshot() {
    ((PG_LOCAL)) || return 0
    local pid
    for pid in $(psql_admin -c "SELECT pid FROM pg_stat_activity WHERE datname = '$PG_DBNAME'"); do
        [[ $(cat "/proc/$pid/comm" 2>/dev/null) == postgres ]] && echo "$pid $(cpu_ticks "$pid")"
    done
    return 0
}

# Milliseconds of CPU the benchmark database's backends used since a snapshot: those alive at
# both ends count their difference, those that started since count whole (the CPU of a backend
# that ended in between is lost). "?" when PostgreSQL is not a process of this machine.
postgres_cpu_ms_since() {
    ((PG_LOCAL)) || { echo "?"; return 0; }
    awk -v t="$TICKS" 'FNR == NR { if (NF == 2) before[$1] = $2; next }
        NF == 2 { total += $2 - ($1 in before ? before[$1] : 0) }
        END { printf "%.0f\n", total * 1000 / t }' <(echo "$1") <(postgres_cpu_snapshot)
}

# Lines for the results, read while the server still runs after the measurements.
postgres_after_measure() {
    local conns n tls states
    conns=$(psql_admin -F ' ' -c "SELECT count(*), count(*) FILTER (WHERE s.ssl), string_agg(DISTINCT coalesce(a.state, '?'), ',') FROM pg_stat_activity a LEFT JOIN pg_stat_ssl s USING (pid) WHERE a.datname = '$PG_DBNAME'")
    read -r n tls states <<<"$conns"
    echo "Connections to $PG_DBNAME at the end of the measurements: $n ($tls over TLS; states: ${states:-none}), the server's pool and every other connection it holds."
}

postgres_size() { echo "database $(psql_bench -c 'SELECT pg_database_size(current_database()) / 1024') kB"; }

postgres_drop() {
    [[ -n $PG_DBNAME ]] || return 0
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then
        say "kept the database $PG_DBNAME"
    else
        psql_admin -c "DROP DATABASE IF EXISTS $PG_DBNAME WITH (FORCE)" || say "could not drop the database $PG_DBNAME"
    fi
    PG_DBNAME=
}
