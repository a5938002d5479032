#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# bench-agent-fetch.sh: how fast an agent fills its image cache.
#
#   YUN_BUILD_DIR=build-rel tests/bench/bench-agent-fetch.sh [--size MIB] [--runs N]
#       [-s section.key=value ...] [--agent BIN]
#       [--vs-agent BIN] [--vs-set section.key=value ...]
#
# A real yun-scheduler on loopback (log level info) gets a raw image of
# --size MiB (default 1024, random bytes) through `yun image create`; then
# `yun-agent fetch-image` (libvirt test:///default) puts it in an empty
# cache --runs times (default 3), each run with a cache of its own. Each
# run prints the agent's own figure (its "image fetched ... ms=" log line:
# show, every chunk written, hashed and inspected, fsync and rename), the
# process's wall time and CPU seconds, and the scheduler's CPU seconds
# during the run (both daemons share the machine's cores). -s passes agent settings, e.g.
# -s images.fetch_window=1; --agent runs another yun-agent binary (an
# older build). With --vs-agent or --vs-set, every run is followed by one
# of a second variant (that binary, the -s settings plus those), so that
# both see the same load on a shared machine; a summary gives each one's
# median and range. MB are 10^6 bytes. A benchmark, not a test: it checks
# only that every run cached the uploaded bytes (sha512).
# Use a Release build: sanitizers slow the hashing path severalfold.
set -euo pipefail
SIZE_MIB=1024
RUNS=3
SETS=()
VS_SETS=()
AGENT=
VS_AGENT=
VS=0
usage() {
    echo "usage: $0 [--size MIB] [--runs N] [-s section.key=value ...] [--agent BIN]" \
        "[--vs-agent BIN] [--vs-set section.key=value ...]" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || usage
    case $1 in
    --size) SIZE_MIB=$2 ;;
    --runs) RUNS=$2 ;;
    -s) SETS+=(-s "$2") ;;
    --agent) AGENT=$2 ;;
    --vs-agent) VS_AGENT=$2; VS=1 ;;
    --vs-set) VS_SETS+=(-s "$2"); VS=1 ;;
    *) usage ;;
    esac
    shift 2
done
export YUN_BUILD_DIR=${YUN_BUILD_DIR:?set YUN_BUILD_DIR to a Release build}
export YUN_TEST_DIR=${YUN_TEST_DIR:-$(mktemp -d /tmp/yun-bench-fetch.XXXXXX)}
# shellcheck source=../integration/lib.sh
source "$(dirname "$0")/../integration/lib.sh"
trap 'cleanup; rm -rf "$T"' EXIT
AGENT=${AGENT:-$B/agent/yun-agent}
VS_AGENT=${VS_AGENT:-$AGENT}

scheduler_setup
# Debug lines per request would be measured with the rest.
sed -i 's/^log_level = debug$/log_level = info/' "$T/scheduler.conf"
issue_key agent node1
issue_key operator admin
start_scheduler
wait_for 10 yun image list || fail "the scheduler did not start serving images"

head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom >"$T/bench.img"
sha=$(sha512sum <"$T/bench.img" | cut -d' ' -f1)
id=$(yun image create bench --file "$T/bench.img" --disk-format raw -f value -c id)
rm -f "$T/bench.img"
echo "image $id: $SIZE_MIB MiB"
echo "main: $AGENT ${SETS[*]:-(default settings)}"
[ "$VS" = 0 ] || echo "vs:   $VS_AGENT ${SETS[*]} ${VS_SETS[*]}"

# The scheduler's CPU time so far, in clock ticks (utime + stime).
sched_cpu() { awk '{ print $14 + $15 }' "/proc/$SCHED_PID/stat"; }

# fill LABEL RUN AGENT [settings...]: one fill into an empty cache; prints a
# line and appends the MB/s to $T/LABEL.mbs.
fill() {
    local label=$1 run=$2 agent=$3
    shift 3
    local state=$T/agent-$label-$run log=$T/agent-$label-$run.log
    TIMEFORMAT='%R %U %S'
    local before
    before=$(sched_cpu)
    { time "$agent" -c /dev/null \
        -s "agent.key_file=$T/node1.key" -s "agent.state_dir=$state" \
        -s "agent.log_file=$log" -s agent.log_level=info -s libvirt.uri=test:///default \
        -s network.enabled=false "$@" fetch-image "$id" >"$T/path" 2>/dev/null; } \
        2>"$T/time" || fail "$label run $run: fetch-image failed: $(tail -3 "$log")"
    [ "$(sha512sum <"$(cat "$T/path")" | cut -d' ' -f1)" = "$sha" ] ||
        fail "$label run $run: the cached file differs from the upload"
    local ms wall user sys sched
    sched=$(($(sched_cpu) - before))
    ms=$(sed -n 's/.*msg="image fetched .* ms=\([0-9]*\).*/\1/p' "$log")
    read -r wall user sys <"$T/time"
    awk -v label="$label" -v run="$run" -v ms="$ms" -v size="$SIZE_MIB" -v wall="$wall" \
        -v u="$user" -v s="$sys" -v sc="$sched" -v hz="$(getconf CLK_TCK)" \
        -v out="$T/$label.mbs" 'BEGIN {
            mbs = size * 1048576 / 1e6 / (ms / 1e3)
            printf "%-4s run %s: fetch %6d ms  %7.1f MB/s   process %6.2f s", label, run,
                ms, mbs, wall
            printf "  cpu %5.2f s (user %5.2f)  scheduler cpu %5.2f s\n", u + s, u, sc / hz
            printf "%.1f\n", mbs >>out
        }'
    rm -rf "$state"
}

for run in $(seq "$RUNS"); do
    fill main "$run" "$AGENT" "${SETS[@]}"
    [ "$VS" = 0 ] || fill vs "$run" "$VS_AGENT" "${SETS[@]}" "${VS_SETS[@]}"
done
for label in main vs; do
    [ -f "$T/$label.mbs" ] || continue
    sort -n "$T/$label.mbs" | awk -v label="$label" '{ v[NR] = $1 } END {
        m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%-4s median %.1f MB/s, range %.1f to %.1f MB/s over %d runs\n", label, m,
            v[1], v[NR], NR
    }'
done
