#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A scheduler and two agents (libvirt test:///default) on loopback: both
# register and show up with their inventory; a SIGKILLed agent shows down
# after the heartbeat interval and up again, with the same host id, when
# restarted; an operator can disable and enable a host; a client with a
# wrong key gets a clear authentication error that the scheduler logs while
# it goes on serving others; an unreachable scheduler is reported quickly.
source "$(dirname "$0")/lib.sh"

scheduler_setup
issue_key agent node1
issue_key agent node2
issue_key operator admin
start_scheduler
start_agent node1
node1_pid=$AGENT_PID
start_agent node2

# Describe: both hosts register and are up with their inventory.
wait_for 15 host_is node1 up || fail "node1 never came up"
wait_for 15 host_is node2 up || fail "node2 never came up"
json=$(yun host list -f json)
[ "$(jq length <<<"$json")" = 2 ] || fail "expected 2 hosts: $json"
jq -e 'all(.[]; .state == "up" and .enabled and .cpus > 0 and .memory_mb > 0
        and .disk_gb > 0 and .hypervisor_type == "TEST" and (.id | length) == 36)' \
    <<<"$json" >/dev/null || fail "bad inventory: $json"
id1=$(yun host show node1 -f value -c id)
pass "two hosts up with inventory"

# Act: SIGKILL node1. Assert: down after 3 missed 1 s heartbeats; node2 stays up.
kill -KILL "$node1_pid"
wait_for 15 host_is node1 down || fail "node1 not marked down after SIGKILL"
host_is node2 up || fail "node2 went down with node1"
grep -q 'msg="host down' "$T/scheduler.log" || fail "no 'host down' log line"
pass "killed agent marked down"

start_agent node1
wait_for 15 host_is node1 up || fail "node1 not up after restart"
[ "$(yun host show node1 -f value -c id)" = "$id1" ] || fail "node1 changed its host id"
[ "$(yun host list -f json | jq length)" = 2 ] || fail "the restart added a host"
pass "restarted agent up with the same host id"

# Disable and enable, by name and by id.
yun host disable node1 --reason maintenance >/dev/null
[ "$(yun host show "$id1" -f value -c enabled)" = false ] || fail "disable did not stick"
[ "$(yun host show node1 -f value -c disabled_reason)" = maintenance ] || fail "no reason"
yun host enable "$id1" >/dev/null
[ "$(yun host show node1 -f value -c enabled)" = true ] || fail "enable did not stick"
if out=$(yun host show no-such-host 2>&1); then fail "unknown host succeeded"; fi
grep -q "not found" <<<"$out" || fail "unclear error for an unknown host: $out"
pass "disable, enable and unknown host"

# A client whose key the scheduler never issued: same id, wrong bytes.
sed "s/^key = .*/key = $(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')/" \
    "$T/admin.key" >"$T/forged.key"
chmod 600 "$T/forged.key"
if out=$(YUN_KEY_FILE=$T/forged.key "$B/cli/yun" host list 2>&1); then
    fail "a forged key was accepted"
fi
grep -q "authentication failed" <<<"$out" || fail "unclear error for a forged key: $out"
grep -q "YUN_E_SEAL" <<<"$out" || fail "no stable code for a forged key: $out"
wait_for 5 grep -q 'message rejected peer=admin.*error=YUN_E_SEAL' "$T/scheduler.log" ||
    fail "the scheduler did not log the rejection"
yun host list >/dev/null || fail "the scheduler stopped serving after a forged key"
pass "forged key refused, logged, others served"

# An agent key cannot act as an operator.
if out=$(YUN_KEY_FILE=$T/node1.key "$B/cli/yun" host list 2>&1); then
    fail "an agent key listed hosts"
fi
grep -q "YUN_E_DENIED" <<<"$out" || fail "unclear error for an agent key: $out"
pass "agent key denied operator calls"

# A revoked key is refused; a re-issued one works.
"$B/scheduler/yun-scheduler" -c "$T/scheduler.conf" revoke-key admin >/dev/null
if out=$(yun host list 2>&1); then fail "a revoked key was accepted"; fi
grep -q "YUN_E_UNKNOWN_PEER" <<<"$out" || fail "unclear error for a revoked key: $out"
rm -f "$T/admin.key"
issue_key operator admin
yun host list >/dev/null || fail "re-issued key refused"
pass "revoked key refused, re-issued key accepted"

# Key files readable by others are refused.
chmod 644 "$T/admin.key"
if out=$(yun host list 2>&1); then fail "a world-readable key was used"; fi
grep -q "readable by others" <<<"$out" || fail "unclear error: $out"
chmod 600 "$T/admin.key"
pass "world-readable key refused"

# An unreachable scheduler is reported within a few seconds, never a hang.
dead=$(free_port)
start=$(date +%s)
if out=$(yun --timeout 2 --url "tcp://127.0.0.1:$dead" host list 2>&1); then
    fail "a dead scheduler answered"
fi
took=$(($(date +%s) - start))
grep -q "did not answer" <<<"$out" || fail "unclear error for a dead scheduler: $out"
[ "$took" -le 10 ] || fail "took $took s to report a dead scheduler"
pass "unreachable scheduler reported in ${took}s"

# The scheduler refuses to start without its secret, or with one others can read.
chmod 644 "$T/cluster.key"
if "$B/scheduler/yun-scheduler" -c "$T/scheduler.conf" -s scheduler.bus_url=tcp://127.0.0.1:$dead \
    2>"$T/refuse.err"; then
    fail "scheduler started with a world-readable secret"
fi
grep -q "stopped on an error (EPERM)" "$T/refuse.err" || fail "no refusal on stderr"
grep -q "secret .* is readable by others" "$T/scheduler.log" || fail "unclear refusal in the log"
chmod 600 "$T/cluster.key"
pass "scheduler refuses a world-readable secret"

# Usage errors exit 2 with a one-line message.
set +e
yun host frobnicate >/dev/null 2>&1
rc=$?
set -e
[ "$rc" = 2 ] || fail "usage error exited $rc"
pass "usage error exits 2"
echo "all host tests passed"
