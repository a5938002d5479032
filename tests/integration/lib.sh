# SPDX-License-Identifier: Apache-2.0
# lib.sh: helpers for integration tests that start real yun daemons on
# loopback in a private directory and drive them only through the CLI.
# Source it; it sets $T (the test's directory) and cleans up on exit.
set -euo pipefail

B=${YUN_BUILD_DIR:?run through ctest, or set YUN_BUILD_DIR}
T=${YUN_TEST_DIR:-$(mktemp -d)}
rm -rf "$T"
mkdir -p "$T"
PIDS=()
# The CLI keeps its token here, never in the user's ~/.config.
export YUN_CONFIG_DIR=$T/config

cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*" >&2
    local f
    for f in "$T"/*.log; do
        [ -f "$f" ] || continue
        echo "--- $f (last 20 lines)" >&2
        tail -20 "$f" >&2
    done
    exit 1
}

pass() { echo "ok: $*"; }

free_port() {
    local p
    for p in $(shuf -i 20000-40000 -n 50); do
        ss -Htln "sport = :$p" | grep -q . || { echo "$p"; return; }
    done
    fail "no free port"
}

# scheduler_setup: writes $T/scheduler.conf, creates the secret, the store
# and the admin user with a random password in $T/admin.password; the `yun`
# wrapper (and any "$B/cli/yun" run after) logs in as admin by itself.
scheduler_setup() {
    PORT=$(free_port)
    URL=tcp://127.0.0.1:$PORT
    cat >"$T/scheduler.conf" <<CONF
[scheduler]
bus_url = $URL
state_dir = $T/sched
secret_file = $T/cluster.key
log_file = $T/scheduler.log
log_level = debug
[hosts]
check_interval_ms = 200
CONF
    ADMIN_PASSWORD_FILE=$T/admin.password
    (umask 077 && head -c 18 /dev/urandom | base64 >"$ADMIN_PASSWORD_FILE")
    "$B/scheduler/yun-scheduler" -c "$T/scheduler.conf" init \
        --admin-password-file "$ADMIN_PASSWORD_FILE" >/dev/null
    export YUN_USERNAME=admin YUN_PASSWORD_FILE=$ADMIN_PASSWORD_FILE YUN_PROJECT=admin
}

# as_user USER PASSWORD_FILE PROJECT ARGS...: runs `yun ARGS` as another user,
# with a token cache of its own.
as_user() {
    local user=$1 pw=$2 project=$3
    shift 3
    YUN_USERNAME=$user YUN_PASSWORD_FILE=$pw YUN_PROJECT=$project \
        YUN_CONFIG_DIR=$T/config-$user-$project yun "$@"
}

# new_password NAME: a random password in $T/NAME.password (mode 0600).
new_password() {
    (umask 077 && head -c 18 /dev/urandom | base64 >"$T/$1.password")
    echo "$T/$1.password"
}

issue_key() { # KIND NAME
    "$B/scheduler/yun-scheduler" -c "$T/scheduler.conf" issue-key "--$1" "$2" \
        --out "$T/$2.key" 2>/dev/null
}

start_scheduler() {
    "$B/scheduler/yun-scheduler" -c "$T/scheduler.conf" 2>>"$T/scheduler.err" &
    SCHED_PID=$!
    PIDS+=("$SCHED_PID")
}

# Test agents wire no networks unless a test asks (-s network.enabled=true):
# they share this machine's namespace with every other test and cloud.
start_agent() { # NAME [extra --set args...]
    local name=$1
    shift
    "$B/agent/yun-agent" -c /dev/null \
        -s "agent.key_file=$T/$name.key" -s "agent.state_dir=$T/agent-$name" \
        -s "agent.log_file=$T/agent-$name.log" -s agent.log_level=debug \
        -s agent.heartbeat_interval_s=1 -s agent.request_timeout_ms=1000 \
        -s libvirt.uri=test:///default -s "agent.listen_url=ipc://$T/agent-$name.cmd" \
        -s network.enabled=false "$@" 2>>"$T/agent-$name.err" &
    AGENT_PID=$!
    PIDS+=("$AGENT_PID")
}

yun() { YUN_KEY_FILE=$T/admin.key "$B/cli/yun" "$@"; }

# wait_for SECONDS COMMAND...: polls until COMMAND succeeds.
wait_for() {
    local secs=$1 i
    shift
    for i in $(seq $((secs * 10))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

host_state() { # NAME -> up|down
    yun host show "$1" -f value -c state
}

host_is() { [ "$(host_state "$1" 2>/dev/null)" = "$2" ]; }
