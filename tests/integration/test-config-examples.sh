#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The annotated example configs in contrib/config/ document every key with
# its default: they must be exactly the daemons' --dump-config of the
# defaults (after their four header lines), and must load without warnings.
source "$(dirname "$0")/lib.sh"
S=${YUN_SOURCE_DIR:?}

for d in scheduler agent; do
    bin=$B/$d/yun-$d
    # -c with a file that does not exist would fail; an empty file gives
    # the pure defaults whatever /etc/yun holds.
    : >"$T/empty.conf"
    "$bin" -c "$T/empty.conf" --dump-config >"$T/$d.dump"
    tail -n +5 "$S/contrib/config/$d.conf" >"$T/$d.example"
    diff -u "$T/$d.example" "$T/$d.dump" ||
        fail "contrib/config/$d.conf is out of step with 'yun-$d --dump-config'"
    "$bin" -c "$S/contrib/config/$d.conf" --dump-config >"$T/$d.reload" 2>"$T/$d.err"
    [ ! -s "$T/$d.err" ] || fail "the $d example warns: $(cat "$T/$d.err")"
    cmp -s "$T/$d.reload" "$T/$d.dump" || fail "the $d example does not load to the defaults"
    pass "contrib/config/$d.conf matches the defaults"
done

# An invalid value names the file, the line, the key and the value.
printf '[scheduler]\n\n# a comment\nlog_level = loud\n' >"$T/bad.conf"
if "$B/scheduler/yun-scheduler" -c "$T/bad.conf" --dump-config >/dev/null 2>"$T/bad.err"; then
    fail "an invalid log level was accepted"
fi
grep -q "bad.conf:4: invalid value 'loud' for key 'scheduler.log_level'" "$T/bad.err" ||
    fail "unclear config error: $(cat "$T/bad.err")"
# An unknown key warns with file:line and goes on.
printf '[agent]\nfrobnicate = 1\n' >"$T/unknown.conf"
"$B/agent/yun-agent" -c "$T/unknown.conf" --dump-config >/dev/null 2>"$T/unknown.err" ||
    fail "an unknown key stopped the agent"
grep -q "unknown.conf:2: unknown key 'frobnicate'" "$T/unknown.err" ||
    fail "no warning for an unknown key: $(cat "$T/unknown.err")"
pass "config errors and warnings name file and line"
