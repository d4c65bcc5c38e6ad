# Sourced by bench/run.sh: the SQLite backend, a file in the run's temporary folder, read with the
# sqlite3 tool. Each function is called through `db NAME` while BACKEND=sqlite (see run.sh).

sqlite_title() { echo "SQLite"; }
# Commands this backend needs, as command:Debian-package.
sqlite_tools() { echo "sqlite3:sqlite3"; }

# Creates nothing yet (the import makes the file); sets DB_URL.
sqlite_create() {
    mkdir -p "$WORK/sqlite"
    SQLITE_DB=$WORK/sqlite/bench.db
    DB_URL=sqlite://$SQLITE_DB
}

sqlite_query() { sqlite3 "$SQLITE_DB" "$1"; }

# The customers through `autolink customers import` (its SQLite bulk path).
sqlite_load() {
    RUST_LOG=warn "$AUTOLINK" --config "$CONFIG" customers import "$CSV"
}

# Nothing to do after the load.
sqlite_prepare() { :; }

# BENCH_AUDIT_EVENTS: N events of earlier sign-ins appended in SQL (see prefill_audit_sql).
sqlite_prefill_audit() {
    sqlite3 "$SQLITE_DB" "$(prefill_audit_sql sqlite "$1")"
    echo "$1 audit events of earlier sign-ins appended in SQL"
}

# After the pre-link: while the service keeps the audit lookup file, wait (at most
# BENCH_LOOKUP_WAIT seconds, 900) until its merge has caught up with the log, so that the
# measurements see the steady state of a service that runs for long, not the first indexing of
# the prefilled events.
sqlite_settle() {
    local lookup=$SQLITE_DB.audit-lookup backlog= waited=0 limit=${BENCH_LOOKUP_WAIT:-900}
    [[ -f $lookup ]] || return 0
    while ((waited < limit)); do
        backlog=$(sqlite3 "$SQLITE_DB" "ATTACH '$lookup' AS l; SELECT (SELECT max(id) FROM audit_events) - (SELECT indexed_through FROM l.audit_lookup_state)" 2>/dev/null || echo '?')
        [[ $backlog =~ ^[0-9]+$ ]] && ((backlog < 20000)) && break
        sleep 5
        waited=$((waited + 5))
    done
    echo "waited for the audit lookup merge: $backlog events behind the log after $waited s"
}

# One line for the results: where the database is and how it is set.
sqlite_describe() {
    echo "a file in the run's temporary folder ($(df -T "$WORK" | awk 'NR == 2 { print $2 }'), on this machine), SQLite bundled in the binary; sqlite3 tool $(sqlite3 --version | cut -d' ' -f1) for the checks"
}

# How SQLite plans the sign-in lookup (the query of storage::links::find_active, whose diesel
# binds `active = ?`).
sqlite_plan() {
    sqlite3 "$SQLITE_DB" "EXPLAIN QUERY PLAN SELECT customers.id, customers.account_number FROM identity_links INNER JOIN customers ON identity_links.customer_id = customers.id WHERE identity_links.issuer = ?1 AND identity_links.subject = ?2 AND identity_links.active = ?3" \
        | sed -n 's/^[|`]--//p' | paste -sd ';' -
}

# The database runs inside the server process: its CPU is the server's.
sqlite_cpu_snapshot() { :; }
sqlite_cpu_ms_since() { echo "-"; }

# Lines for the results, read while the server still runs after the measurements.
sqlite_after_measure() {
    # The audit lookup merge (while the service keeps the sidecar file) runs behind the load:
    # how many events it had still to index when the measurements ended.
    local lookup=$SQLITE_DB.audit-lookup backlog
    [[ -f $lookup ]] || return 0
    backlog=$(sqlite3 "$SQLITE_DB" "ATTACH '$lookup' AS l; SELECT (SELECT max(id) FROM audit_events) - (SELECT indexed_through FROM l.audit_lookup_state)" 2>/dev/null || echo '?')
    echo "Audit lookup merge: $backlog events not yet indexed when the measurements ended (found by a scan until merged)."
}

sqlite_size() { echo "file $(du -k "$SQLITE_DB" | cut -f1) kB"; }

# The file (and its companions) goes, so that a second measurement of the backend in one run
# starts from an empty database too; the rest goes with the temporary folder.
sqlite_drop() {
    [[ -n ${SQLITE_DB:-} && ${BENCH_KEEP:-0} != 1 ]] || return 0
    rm -f "$SQLITE_DB" "$SQLITE_DB"-wal "$SQLITE_DB"-shm "$SQLITE_DB".audit-lookup*
}
