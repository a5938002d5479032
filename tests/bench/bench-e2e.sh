#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# bench-e2e.sh: compute end to end, with a real yun-scheduler and
# yun-host-sim's simulated hosts (docs/compute.md "Benchmarks").
#
#   YUN_BUILD_DIR=build-rel tests/bench/bench-e2e.sh
#
# For each host count in $BENCH_HOSTS (default "10 1000 10000"), from a
# fresh state directory: a scheduler (log level warn, default config but
# for the project quota), its agent peers registered at once
# (issue-key --count), the simulator's hosts registered, synced and
# heartbeating every 5 s; then bench-e2e-client, logged in as admin,
# creates $BENCH_COUNT (1000) m1.nano servers one per request with 64
# requests in flight, deletes them, and does it again with creates of 100
# servers per request (4 in flight). Each server is timed from its create
# request to the scheduler's acceptance of its "spawned" event (ACTIVE),
# and from its delete request to "deleted". Printed: throughput and
# p50/p99 per phase, the time for all hosts to come up, the scheduler's
# CPU time while the hosts only heartbeat (10 s), and its CPU time and RSS
# over the run. Targets: >= 1 000 servers/s create-to-ACTIVE.
# BENCH_CONF is appended to the scheduler's config. BENCH_PERF=1 records a perf profile of the scheduler over the single
# creates and deletes.
# Use a Release build: sanitizers multiply the cost.
set -euo pipefail
export YUN_BUILD_DIR=${YUN_BUILD_DIR:?set YUN_BUILD_DIR to a Release build}
B=$YUN_BUILD_DIR
HOSTS=${BENCH_HOSTS:-"10 1000 10000"}
COUNT=${BENCH_COUNT:-1000}
BASE=${YUN_TEST_DIR:-$(mktemp -d /tmp/yun-bench-e2e.XXXXXX)}
TCK=$(getconf CLK_TCK)

cpu_s() { # PID -> user+system seconds
    awk -v t="$TCK" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$1/stat"
}
rss_mib() { # PID -> "RSS x MiB (peak y MiB)"
    awk '/^VmRSS:/ { r = $2 } /^VmHWM:/ { h = $2 }
         END { printf "RSS %.1f MiB (peak %.1f MiB)", r / 1024, h / 1024 }' "/proc/$1/status"
}

run() { # HOSTS
    local n=$1
    export YUN_TEST_DIR=$BASE/hosts-$n
    # shellcheck source=../integration/lib.sh
    source "$(dirname "$0")/../integration/lib.sh"
    scheduler_setup
    # lib.sh's test settings: back to the defaults that matter here.
    sed -i -e 's/^log_level = debug/log_level = warn/' -e '/^check_interval_ms/d' \
        "$T/scheduler.conf"
    cat >>"$T/scheduler.conf" <<CONF
[compute]
max_instances_per_project = 1000000
CONF
    # BENCH_CONF: more scheduler config, e.g. $'[hosts]\nheartbeat_write_interval_s = 0'
    printf '%s\n' "${BENCH_CONF:-}" >>"$T/scheduler.conf"
    issue_key operator admin
    "$B/scheduler/yun-scheduler" -c "$T/scheduler.conf" issue-key --agent sim --count "$n" \
        >/dev/null
    start_scheduler
    wait_for 10 yun flavor list || fail "the scheduler did not start"
    head -c 1M /dev/zero >"$T/disk.raw"
    yun image create tiny --file "$T/disk.raw" --disk-format raw >/dev/null

    local t0 sim_port
    sim_port=$(free_port)
    t0=$(date +%s.%N)
    "$B/tests/bench/yun-host-sim" --scheduler "$URL" --secret "$T/cluster.key" \
        --listen "tcp://127.0.0.1:$sim_port" --hosts "$n" --heartbeat-s 5 \
        --events-file "$T/events" --log-level notice 2>"$T/sim.log" &
    local sim=$!
    PIDS+=("$sim")
    wait_for 180 grep -q "hosts registered and synced: $n of $n" "$T/sim.log" ||
        fail "the $n simulated hosts did not all come up"
    local up_s
    up_s=$(echo "$(date +%s.%N) - $t0" | bc)
    # Let the first heartbeats go round, then measure the idle cost.
    sleep 6
    local c0 c1
    c0=$(cpu_s "$SCHED_PID")
    sleep 10
    c1=$(cpu_s "$SCHED_PID")
    printf '%s hosts: all registered and synced in %.2f s; scheduler CPU while they ' "$n" "$up_s"
    printf 'heartbeat: %.1f%% of a core; %s\n' "$(echo "($c1 - $c0) * 10" | bc -l)" \
        "$(rss_mib "$SCHED_PID")"

    c0=$(cpu_s "$SCHED_PID")
    local client=("$B/tests/bench/bench-e2e-client" --key "$T/admin.key"
                  --password-file "$ADMIN_PASSWORD_FILE" --image tiny --flavor m1.nano
                  --events-file "$T/events" --count "$COUNT")
    # BENCH_PERF=1: a profile of the scheduler over the first phases.
    local perf=
    if [ -n "${BENCH_PERF:-}" ]; then
        perf record ${BENCH_PERF_OPTS:--g} -o "$T/perf.data" -p "$SCHED_PID" >/dev/null 2>&1 &
        perf=$!
    fi
    "${client[@]}" --inflight 64 | sed 's/^/  /'
    if [ -n "$perf" ]; then
        kill -INT "$perf"
        wait "$perf" 2>/dev/null || true
        echo "  profile: perf report -i $T/perf.data"
    fi
    "${client[@]}" --inflight 4 --batch 100 --delete-inflight 64 | sed 's/^/  /'
    c1=$(cpu_s "$SCHED_PID")
    printf '  scheduler: CPU %.2f s over the four phases; %s\n' "$(echo "$c1 - $c0" | bc -l)" \
        "$(rss_mib "$SCHED_PID")"
    kill -USR1 "$sim"
    sleep 0.2
    grep 'events_accepted' "$T/sim.log" | tail -1 | sed 's/^/  /'
    kill -TERM "$sim" "$SCHED_PID" 2>/dev/null || true
    wait 2>/dev/null || true
}

echo "bench-e2e: $COUNT servers per phase; $(nproc) CPUs; results in $BASE"
for n in $HOSTS; do
    (run "$n")
done
