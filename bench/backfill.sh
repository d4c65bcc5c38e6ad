#!/usr/bin/env bash
# Benchmark of `autolink backfill` (see BENCHMARKS.md, "Backfill"):
#
#   bash bench/backfill.sh            # SQLite and PostgreSQL
#   BENCH_BACKENDS=sqlite bash bench/backfill.sh
#
# Generates with awk a Microsoft Graph export of BENCH_USERS local-account users in pages of 999
# (as `GET /users?$select=id,displayName,givenName,surname,mail,otherMails,identities,creationType`
# returns them) and a customer CSV holding the address of every other user: half the users match
# an imported customer (Linked), half are new (Created). Builds the release binary; then, per
# backend and for each of BENCH_REPS runs, into a fresh database (migrated and imported before the
# timed run): `autolink backfill --channel web --report FILE PAGES...`, timed with
# /usr/bin/time -v (wall time of the whole process, both passes, and its peak resident memory,
# VmHWM). After the last run: the second run on the same database (every user AlreadyLinked)
# and, on a fresh database, the dry run; on SQLite, on another fresh database, the floor
# (examples/backfill_floor.rs: the same reads and rows through statements prepared once, and
# nothing else). Reports users/s (users / wall time) and the medians.
#
# Knobs (environment): BENCH_USERS (1000000), BENCH_REPS (3), BENCH_BACKENDS ("sqlite postgres"),
# BENCH_POSTGRES_URL (postgres://postgres@127.0.0.1:5432/postgres; its user creates and drops
# a database of its own), BENCH_KEEP=1 keeps the temporary folder, BENCH_BINARIES (a folder
# holding autolink and backfill_floor built earlier: used instead of building; BENCH_CODE names
# their code). Needs: cargo, awk, psql,
# /usr/bin/time (Debian package `time`).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
USERS=${BENCH_USERS:-1000000}
REPS=${BENCH_REPS:-3}
BACKENDS=${BENCH_BACKENDS:-sqlite postgres}
PG_ADMIN_URL=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
STAMP=$(date +%Y-%m-%d-%H%M%S)
OUT=$ROOT/bench/out
mkdir -p "$OUT"
RESULTS=$OUT/backfill-$STAMP.md
ISSUER="https://fabrikam.b2clogin.com/775527ff-9a37-4307-8b3d-cc311f58d925/v2.0/"

say() { printf '[backfill %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }

[[ -x /usr/bin/time ]] || {
    [[ $(id -u) == 0 ]] || die "install the Debian package time (for /usr/bin/time -v)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
}
for tool in cargo awk; do command -v "$tool" >/dev/null || die "$tool is missing"; done
[[ " $BACKENDS " != *" postgres "* ]] || command -v psql >/dev/null || die "psql is missing"

if [[ -n ${BENCH_BINARIES:-} ]]; then
    # Binaries built earlier (autolink and backfill_floor in that folder); BENCH_CODE says which
    # code they are.
    say "using $BENCH_BINARIES/autolink and backfill_floor (not built)"
    BUILT=$BENCH_BINARIES/autolink
    BUILT_FLOOR=$BENCH_BINARIES/backfill_floor
else
    say "cargo build --release --bin autolink --example backfill_floor"
    cargo build --release --bin autolink --example backfill_floor
    BUILT=${CARGO_TARGET_DIR:-$ROOT/target}/release/autolink
    BUILT_FLOOR=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/backfill_floor
fi
[[ -x $BUILT ]] || die "$BUILT is missing"
[[ " $BACKENDS " != *" sqlite "* || -x $BUILT_FLOOR ]] || die "$BUILT_FLOOR is missing"
WORK=$(mktemp -d /tmp/autolink-backfill.XXXXXX)
PG_DBS=()
cleanup() {
    for name in "${PG_DBS[@]}"; do
        psql "$PG_ADMIN_URL" -X -q -c "DROP DATABASE IF EXISTS $name" >/dev/null 2>&1 || true
    done
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then say "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
# A copy, so that a build by someone else during the run cannot swap the binary.
AUTOLINK=$WORK/autolink
cp "$BUILT" "$AUTOLINK"
FLOOR=$WORK/backfill_floor
[[ " $BACKENDS " != *" sqlite "* ]] || cp "$BUILT_FLOOR" "$FLOOR"
BUILD_TREE=${BENCH_CODE:-}
[[ -n $BUILD_TREE ]] || BUILD_TREE="commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock migrations 2>/dev/null || echo ' with uncommitted changes in src/Cargo/migrations')"

# --- the export and the customers -----------------------------------------------------------------
PAGES=$WORK/pages
mkdir -p "$PAGES"
CSV=$WORK/customers.csv
say "generating $USERS users in pages of 999, and $((USERS / 2)) customers"
awk -v users="$USERS" -v dir="$PAGES" -v csv="$CSV" 'BEGIN {
    print "account_number,legal_entity,party_type,is_b2b,primary_email,first_name,last_name" > csv;
    split("Ana Bo Carla Dev Eli Fatima Gus Hana Ivo Jun Kim Lee Mia Noor Oscar Pia", first, " ");
    split("Smith Chen Garcia Muller Rossi Novak Kowalski Haddad Tanaka Silva", last, " ");
    ctx = "https://graph.microsoft.com/v1.0/$metadata#users(id,displayName,givenName,surname,mail,otherMails,identities,creationType)";
    page = 0;
    for (i = 1; i <= users; i++) {
        if ((i - 1) % 999 == 0) {
            if (page > 0) { printf "],\"@odata.nextLink\":\"https://graph.microsoft.com/v1.0/users?$skiptoken=p%d\"}\n", page > file; close(file); }
            page++;
            file = sprintf("%s/page-%05d.json", dir, page);
            printf "{\"@odata.context\":\"%s\",\"value\":[", ctx > file;
        } else {
            printf "," > file;
        }
        f = first[i % 16 + 1]; l = last[i % 10 + 1];
        email = f "." l "+" i "@Example" (i % 400) ".com";
        id = sprintf("%08d-%04d-4000-8000-%012d", i % 99991, i % 9973, i);
        printf "{\"id\":\"%s\",\"displayName\":\"%s %s\",\"givenName\":\"%s\",\"surname\":\"%s\",\"mail\":null,\"otherMails\":[],\"creationType\":\"LocalAccount\",\"identities\":[{\"signInType\":\"emailAddress\",\"issuer\":\"fabrikam.onmicrosoft.com\",\"issuerAssignedId\":\"%s\"},{\"signInType\":\"userPrincipalName\",\"issuer\":\"fabrikam.onmicrosoft.com\",\"issuerAssignedId\":\"%s@fabrikam.onmicrosoft.com\"}]}", id, f, l, f, l, email, id > file;
        if (i % 2 == 0) printf "C%09d,USRT,person,false,%s,%s,%s\n", i, email, f, l > csv;
    }
    printf "]}\n" > file;
}'
say "$(ls "$PAGES" | wc -l) pages, $(du -sh "$PAGES" | cut -f1)"

# --- runs --------------------------------------------------------------------------------------
fresh_db() { # backend label -> database URL on stdout, migrated, customers imported
    local backend=$1 label=$2 url
    if [[ $backend == sqlite ]]; then
        url=sqlite://$WORK/$label.db
    else
        local name=autolink_backfill_${STAMP//-/_}_$label
        psql "$PG_ADMIN_URL" -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE $name" >/dev/null
        PG_DBS+=("$name")
        url=$(sed -E 's#^([a-z]+://[^/?]*)(/[^?]*)?(\?.*)?$#\1/'"$name"'\3#' <<<"$PG_ADMIN_URL")
    fi
    AUTOLINK_DATABASE_URL=$url RUST_LOG=warn "$AUTOLINK" customers import "$CSV" >/dev/null
    echo "$url"
}

run_backfill() { # url label [--dry-run] -> "seconds peak_kib" on stdout
    local url=$1 label=$2; shift 2
    local timing=$WORK/time-$label.txt log=$WORK/backfill-$label.log
    AUTOLINK_DATABASE_URL=$url AUTOLINK_TENANT_ISSUER=$ISSUER \
        AUTOLINK_CHANNELS='[{id="web",legal_entity="USRT",customer_type="B2C",client_ids=["93fd07aa-333c-409d-955d-96008fd08dd9"]}]' \
        /usr/bin/time -v -o "$timing" \
        "$AUTOLINK" backfill --channel web --report "$WORK/report-$label.jsonl" "$@" "$PAGES"/page-*.json \
        >"$log" 2>"$WORK/stderr-$label.log" || { cat "$log" "$WORK/stderr-$label.log" >&2; die "backfill $label failed"; }
    local wall peak
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0;
        for (k = 1; k <= n; k++) s = s * 60 + p[k]; print s }' "$timing")
    peak=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$timing")
    say "$label: $(tr '\n' ' ' <"$log")"
    echo "$wall $peak"
}

expect() { # label pattern
    grep -q "^$2\$" "$WORK/backfill-$1.log" || die "$1: expected '$2' in: $(cat "$WORK/backfill-$1.log")"
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
rate() { awk -v r="$USERS" -v s="$1" 'BEGIN { printf "%d", r / s }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
verdict() { if awk "BEGIN { exit !($1) }"; then echo "met"; else echo "MISSED"; fi; }

{
    echo "# Backfill benchmark, $STAMP"
    echo
    echo "- build: $BUILD_TREE, release profile"
    echo "- machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "- export: $USERS users in $(ls "$PAGES" | wc -l) Graph pages of 999, $(du -sh "$PAGES" | cut -f1); half the users match one of $((USERS / 2)) imported customers, half are new"
    echo "- command: \`autolink backfill --channel web --report FILE PAGES...\` into a fresh, migrated database with the customers imported (not timed); wall time of the whole process (both passes), peak RSS from /usr/bin/time -v"
} >"$RESULTS"

for backend in $BACKENDS; do
    target=50000
    [[ $backend == postgres ]] && target=20000
    declare -a WALLS=() PEAKS=()
    last=
    for ((rep = 1; rep <= REPS; rep++)); do
        url=$(fresh_db "$backend" "${backend}_rep$rep")
        read -r wall peak < <(run_backfill "$url" "${backend}_rep$rep")
        expect "${backend}_rep$rep" "Linked: $((USERS / 2))"
        expect "${backend}_rep$rep" "Created: $((USERS - USERS / 2))"
        WALLS+=("$wall"); PEAKS+=("$peak"); last=$url
    done
    read -r again_wall again_peak < <(run_backfill "$last" "${backend}_again")
    expect "${backend}_again" "AlreadyLinked: $USERS"
    url=$(fresh_db "$backend" "${backend}_dry")
    read -r dry_wall dry_peak < <(run_backfill "$url" "${backend}_dry" --dry-run)
    expect "${backend}_dry" "WouldLink: $((USERS / 2))"
    expect "${backend}_dry" "WouldCreate: $((USERS - USERS / 2))"
    floor_wall=
    if [[ $backend == sqlite ]]; then
        # The floor: the same SQLite work with nothing else (examples/backfill_floor.rs).
        url=$(fresh_db sqlite sqlite_floor)
        floor_line=$("$FLOOR" "${url#sqlite://}" "$USERS") || die "backfill_floor failed"
        say "$floor_line"
        grep -q "Linked $((USERS / 2)), Created $((USERS - USERS / 2));" <<<"$floor_line" ||
            die "backfill_floor did not link and create what the backfill does: $floor_line"
        floor_wall=$(sed -E 's/.* users in ([0-9.]+) s .*/\1/' <<<"$floor_line")
    fi
    MWALL=$(median "${WALLS[@]}")
    MPEAK=$(median "${PEAKS[@]}")
    MAXPEAK=$(printf '%s\n' "${PEAKS[@]}" "$again_peak" "$dry_peak" | sort -g | tail -1)
    {
        echo
        echo "## $backend (target: $target users/s, peak RSS < 150 MiB)"
        echo
        echo "| run | wall time (s) | users/s | peak RSS (MiB) |"
        echo "| --- | --- | --- | --- |"
        for ((i = 0; i < REPS; i++)); do
            echo "| fresh $((i + 1)) | ${WALLS[$i]} | $(rate "${WALLS[$i]}") | $(mib "${PEAKS[$i]}") |"
        done
        echo "| **median** | **$MWALL** | **$(rate "$MWALL")** | **$(mib "$MPEAK")** |"
        echo "| second run (all AlreadyLinked) | $again_wall | $(rate "$again_wall") | $(mib "$again_peak") |"
        echo "| dry run | $dry_wall | $(rate "$dry_wall") | $(mib "$dry_peak") |"
        if [[ -n $floor_wall ]]; then
            echo "| floor: the same SQLite work and nothing else (examples/backfill_floor.rs) | $floor_wall | $(rate "$floor_wall") | |"
        fi
        echo
        echo "- users/s: $(verdict "$(rate "$MWALL") >= $target") (median $(rate "$MWALL"), target $target)"
        echo "- peak RSS over every run: $(verdict "$MAXPEAK < 153600") ($(mib "$MAXPEAK") MiB)"
        if [[ -n $floor_wall ]]; then
            echo "- the median run takes $(awk -v m="$MWALL" -v f="$floor_wall" 'BEGIN { printf "%.2f", m / f }') times the floor; the floor itself: $(verdict "$(rate "$floor_wall") >= $target") for $target users/s"
        fi
    } >>"$RESULTS"
done
cat "$RESULTS"
say "results in $RESULTS"
