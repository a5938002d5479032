#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The agent's image cache against a real scheduler on loopback. Images are
# uploaded with `yun image create`, then the agent fetches them over the
# bus with `yun-agent fetch-image` (the entry point until instances ask
# for images themselves): the cached file is named by its sha512 and holds
# the exact bytes; a second fetch downloads nothing; the running agent
# reports its cache and `yun host show` lists it (table and JSON); the
# cache dir is locked while the agent runs; a file corrupted on disk is
# fetched again; the size cap evicts the least recently used image; a
# deactivated or unknown image is refused with a clear error. Skipped (77)
# until the scheduler serves images.
set -euo pipefail
src=${YUN_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
if ! grep -q OP_IMAGE_DOWNLOAD "$src/scheduler/dispatch.c" 2>/dev/null; then
    echo "skip: the scheduler has no image service yet"
    exit 77
fi
for tool in jq sha512sum; do
    command -v "$tool" >/dev/null || { echo "skip: no $tool"; exit 77; }
done
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

scheduler_setup
issue_key agent node1
issue_key operator admin
start_scheduler
wait_for 10 yun image list || fail "the scheduler did not start serving images"

CACHE=$T/agent-node1/images
LOG=$T/agent-node1.log
# Small chunks: a 3 MiB image takes a dozen requests.
AGENT_SETS=(-s images.fetch_chunk_kb=256 -s images.cache_max_size_mb=5)

# fetch_image ID [extra --set args...]: the agent's one-shot fetch.
fetch_image() {
    local id=$1
    shift
    "$B/agent/yun-agent" -c /dev/null \
        -s "agent.key_file=$T/node1.key" -s "agent.state_dir=$T/agent-node1" \
        -s "agent.log_file=$LOG" -s agent.log_level=debug -s libvirt.uri=test:///default \
        "${AGENT_SETS[@]}" "$@" fetch-image "$id"
}
count_log() { grep -c "$1" "$LOG" || true; }
# The image ids node1 reports, comma-separated.
cached_ids() { yun host show node1 -f json | jq -r '[.cached_images[].image_id] | join(",")'; }
cached_ids_are() { [ "$(cached_ids 2>/dev/null)" = "$1" ]; }

head -c 3M /dev/urandom >"$T/a.img"
head -c 3M /dev/urandom >"$T/b.img"
a_id=$(yun image create cache-a --file "$T/a.img" --disk-format raw -f value -c id)
b_id=$(yun image create cache-b --file "$T/b.img" --disk-format raw -f value -c id)
a_sha=$(sha512sum <"$T/a.img" | cut -d' ' -f1)
b_sha=$(sha512sum <"$T/b.img" | cut -d' ' -f1)

# --- Fetch: the file is named by the digest and holds the bytes. ----------
path=$(fetch_image "$a_id") || fail "fetch-image failed"
[ "$path" = "$CACHE/$a_sha" ] || fail "cached under '$path', not its sha512"
cmp "$T/a.img" "$path" || fail "the cached file differs from the upload"
[ "$(count_log 'msg="image fetched')" = 1 ] || fail "expected one download"
[ -z "$(find "$CACHE" -name '.tmp-*')" ] || fail "a temp file was left behind"
pass "image fetched over the bus, stored under its sha512"

# A second fetch (a new process: first use after start) reads the file back
# and downloads nothing.
path=$(fetch_image "$a_id") || fail "second fetch-image failed"
[ "$(count_log 'msg="image fetch started')" = 1 ] || fail "the second fetch downloaded again"
pass "a cached image is verified from disk, not downloaded again"

# --- The running agent reports its cache; the CLI shows it. ----------------
start_agent node1 "${AGENT_SETS[@]}"
agent_pid=$AGENT_PID
wait_for 15 host_is node1 up || fail "node1 never came up"
json=$(yun host show node1 -f json)
jq -e --arg id "$a_id" --arg sha "$a_sha" \
    '.cached_images | length == 1 and .[0].image_id == $id and .[0].os_hash_value == $sha
     and .[0].size == 3145728 and .[0].users == 0
     and (.[0].last_used | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T"))' <<<"$json" >/dev/null ||
    fail "host show lacks the cached image: $(jq .cached_images <<<"$json")"
[ "$(yun host show node1 -f value -c cached_images)" = "$a_id" ] ||
    fail "host show's cached_images column is not the image id"
pass "the agent reports its cached images; 'yun host show' lists them"

# The cache dir is the running agent's: a fetch beside it is refused.
if out=$(fetch_image "$a_id" 2>&1); then fail "fetch-image ran beside the agent"; fi
grep -q "in use by another yun-agent" "$LOG" || fail "unclear refusal: $out"
pass "the cache dir is locked while the agent runs"
kill -TERM "$agent_pid"
wait "$agent_pid" 2>/dev/null || true

# --- A file corrupted on disk is found and fetched again. ------------------
# A byte that differs from the one there (the image is random bytes).
byte=$(od -An -tx1 -j 1000000 -N 1 "$CACHE/$a_sha" | tr -d ' ')
if [ "$byte" = 58 ]; then flip=Y; else flip=X; fi
printf '%s' "$flip" | dd of="$CACHE/$a_sha" bs=1 seek=1000000 conv=notrunc status=none
path=$(fetch_image "$a_id") || fail "fetch-image of a corrupt cached file failed"
cmp "$T/a.img" "$path" || fail "the corrupt file was handed out"
grep -q 'cached image file failed verification' "$LOG" || fail "no verification failure logged"
[ "$(count_log 'msg="image fetch started')" = 2 ] || fail "the corrupt file was not fetched again"
pass "a corrupted cached file is detected and fetched again"

# --- The cap (5 MiB) holds one 3 MiB image: the older unused one goes. -----
path=$(fetch_image "$b_id") || fail "fetch-image of b failed"
cmp "$T/b.img" "$path" || fail "b differs"
[ ! -e "$CACHE/$a_sha" ] || fail "a was not evicted above the cap"
grep -q 'msg="image evicted sha512=.* reason=cap' "$LOG" || fail "no eviction logged"
start_agent node1 "${AGENT_SETS[@]}"
agent_pid=$AGENT_PID
# The host may still show up with the last run's list: wait for this run's.
wait_for 15 cached_ids_are "$b_id" ||
    fail "after eviction the host reports '$(cached_ids)', not '$b_id'"
kill -TERM "$agent_pid"
wait "$agent_pid" 2>/dev/null || true
pass "the least recently used image is evicted above the size cap"

# --- Refusals: deactivated and unknown images. -----------------------------
yun image deactivate cache-a >/dev/null
if out=$(fetch_image "$a_id" 2>&1); then fail "a deactivated image was fetched"; fi
grep -q "is not active (status 'deactivated')" <<<"$out" || fail "unclear error: $out"
if out=$(fetch_image "$(cat /proc/sys/kernel/random/uuid)" 2>&1); then
    fail "an unknown image was fetched"
fi
grep -qi "not found" <<<"$out" || fail "unclear error for an unknown image: $out"
if out=$(fetch_image debian-12 2>&1); then fail "a name was taken for an id"; fi
grep -q "is not an image id" <<<"$out" || fail "unclear error for a bad id: $out"
[ -z "$(find "$CACHE" -name '.tmp-*')" ] || fail "a temp file was left behind"
pass "deactivated, unknown and malformed images are refused with a clear error"
echo "all image cache tests passed"
