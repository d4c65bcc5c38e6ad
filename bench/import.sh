#!/usr/bin/env bash
# Benchmark of the customer import into SQLite (see BENCHMARKS.md, "Customer import"):
#
#   bash bench/import.sh
#
# Generates a CSV file of BENCH_IMPORT_ROWS customers with awk, builds the release binary, and
# runs `autolink customers import FILE` BENCH_REPS times, each into a fresh SQLite database
# (migrated before the timed run), then once more into the last database (the re-import of the
# same file, which must change nothing). For each run it records the wall time and the peak
# resident memory (VmHWM, from /usr/bin/time -v) of the import process, and reports rows per
# second (rows / wall time of the whole process, migrations excluded) and the medians.
#
# Knobs (environment): BENCH_IMPORT_ROWS (1000000), BENCH_REPS (3), BENCH_KEEP=1 keeps the
# temporary folder. Needs: cargo, awk, /usr/bin/time (Debian package `time`).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
ROWS=${BENCH_IMPORT_ROWS:-1000000}
REPS=${BENCH_REPS:-3}
STAMP=$(date +%Y-%m-%d-%H%M%S)
OUT=$ROOT/bench/out
mkdir -p "$OUT"
RESULTS=$OUT/import-$STAMP.md

say() { printf '[import %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }

[[ -x /usr/bin/time ]] || {
    [[ $(id -u) == 0 ]] || die "install the Debian package time (for /usr/bin/time -v)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
}
for tool in cargo awk; do command -v "$tool" >/dev/null || die "$tool is missing"; done

say "cargo build --release --bin autolink"
cargo build --release --bin autolink
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d /tmp/autolink-import.XXXXXX)
cleanup() { if [[ ${BENCH_KEEP:-0} == 1 ]]; then say "kept $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT
# A copy, so that a build by someone else during the run cannot swap the binary.
AUTOLINK=$WORK/autolink
cp "$TARGET/release/autolink" "$AUTOLINK"
BUILD_TREE="commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock migrations 2>/dev/null || echo ' with uncommitted changes in src/Cargo/migrations')"

# --- the file ------------------------------------------------------------------------------------
# Realistic rows: two legal entities, persons and organizations, B2B and consumers, mixed-case
# emails over many domains (a few internationalised), names; account numbers in file order.
CSV=$WORK/customers.csv
say "generating $ROWS rows"
awk -v rows="$ROWS" 'BEGIN {
    print "account_number,legal_entity,party_type,is_b2b,primary_email,first_name,last_name";
    split("Ana Bo Carla Dev Eli Fatima Gus Hana Ivo Jun Kim Lee Mia Noor Oscar Pia", first, " ");
    split("Smith Chen Garcia Muller Rossi Novak Kowalski Haddad Tanaka Silva", last, " ");
    for (i = 1; i <= rows; i++) {
        f = first[i % 16 + 1]; l = last[i % 10 + 1];
        entity = (i % 3 == 0) ? "DEMF" : "USRT";
        party = (i % 20 == 0) ? "organization" : "person";
        b2b = (i % 5 == 0) ? "true" : "false";
        domain = (i % 97 == 0) ? "bücher" (i % 50) ".example" : "Example" (i % 400) ".com";
        email = (i % 11 == 0) ? "" : f "." l "+" i "@" domain;
        printf "C%09d,%s,%s,%s,%s,%s,%s\n", i, entity, party, b2b, email, f, l;
    }
}' >"$CSV"
say "$(du -h "$CSV" | cut -f1) written"

# --- runs --------------------------------------------------------------------------------------
run_import() { # database file, label -> "seconds peak_kib" on stdout
    local db=$1 label=$2
    local timing=$WORK/time-$label.txt log=$WORK/import-$label.log
    AUTOLINK_DATABASE_URL=sqlite://$db RUST_LOG=warn /usr/bin/time -v -o "$timing" \
        "$AUTOLINK" customers import "$CSV" >"$log" 2>&1 || { cat "$log" >&2; die "import $label failed"; }
    local wall peak
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0;
        for (k = 1; k <= n; k++) s = s * 60 + p[k]; print s }' "$timing")
    peak=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$timing")
    say "$label: $(cat "$log")"
    echo "$wall $peak"
}

declare -a WALLS PEAKS
for ((rep = 1; rep <= REPS; rep++)); do
    DB=$WORK/rep$rep.db
    # Migrate first, so the timed run measures the import.
    AUTOLINK_DATABASE_URL=sqlite://$DB RUST_LOG=warn "$AUTOLINK" migrate >/dev/null
    read -r wall peak < <(run_import "$DB" "rep$rep")
    WALLS+=("$wall"); PEAKS+=("$peak")
done
read -r rewall repeak < <(run_import "$WORK/rep$REPS.db" "reimport")
grep -q " 0 inserted, 0 updated, " "$WORK/import-reimport.log" || die "the re-import changed something: $(cat "$WORK/import-reimport.log")"

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
MWALL=$(median "${WALLS[@]}")
MPEAK=$(median "${PEAKS[@]}")
rate() { awk -v r="$ROWS" -v s="$1" 'BEGIN { printf "%d", r / s }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

{
    echo "# Customer import benchmark, $STAMP"
    echo
    echo "- build: $BUILD_TREE, release profile"
    echo "- machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "- file: $ROWS rows, $(du -h "$CSV" | cut -f1); command: \`autolink customers import FILE\` into a fresh, migrated SQLite file"
    echo
    echo "| run | wall time (s) | rows/s | peak RSS (MiB) |"
    echo "| --- | --- | --- | --- |"
    for ((i = 0; i < REPS; i++)); do
        echo "| fresh $((i + 1)) | ${WALLS[$i]} | $(rate "${WALLS[$i]}") | $(mib "${PEAKS[$i]}") |"
    done
    echo "| **median** | **$MWALL** | **$(rate "$MWALL")** | **$(mib "$MPEAK")** |"
    echo "| re-import (changes nothing) | $rewall | $(rate "$rewall") | $(mib "$repeak") |"
} | tee "$RESULTS"
say "results in $RESULTS"
