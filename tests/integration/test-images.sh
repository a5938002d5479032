#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The image service through the CLI only, against a real scheduler on
# loopback: uploads and downloads come back byte for byte (raw and qcow2);
# a wrong --checksum kills the image and leaves no bytes; a client SIGKILLed
# in the middle of an upload leaves a killed image and no bytes once the
# idle timeout passes; a download resumes from a partial file and a corrupt
# prefix is caught by the sha512; list filters and pages; properties and
# tags change; a protected image cannot be deleted; deactivate/reactivate;
# a qcow2 claimed as raw is refused with the reason, and so are QED and LUKS
# files; tombstones are purged after the retention; an upload that would
# eat into the free-space reserve is refused and the image stays queued;
# the audit log records it all. Skipped (77) until the scheduler serves
# OP_IMAGE_CREATE.
set -euo pipefail
src=${YUN_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
if ! grep -q OP_IMAGE_CREATE "$src/scheduler/dispatch.c" 2>/dev/null; then
    echo "skip: the scheduler has no image service yet"
    exit 77
fi
for tool in qemu-img jq cmp md5sum sha512sum; do
    command -v "$tool" >/dev/null || { echo "skip: no $tool"; exit 77; }
done
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

scheduler_setup
idle=60
# Tombstones go a second after their delete (the cron then looks that often).
printf '[images]\ntombstone_retention_s = 1\n' >>"$T/scheduler.conf"
if grep -q '"upload_idle_timeout_s"' "$src/scheduler/config.c"; then
    idle=2
    printf 'upload_idle_timeout_s = %s\n' "$idle" >>"$T/scheduler.conf"
fi
IMAGES=$T/sched/images
issue_key operator admin
start_scheduler
wait_for 10 yun image list || fail "the scheduler did not start serving images"

status_of() { yun image show "$1" -f value -c status; }
status_is() { [ "$(status_of "$1" 2>/dev/null)" = "$2" ]; }
# The image's bytes: files under the image dir whose name holds its id.
bytes_of() { find "$IMAGES" -name "*$1*" 2>/dev/null; }

# --- Round trips: a 10 MiB random raw image and a small qcow2. -------------
head -c 10M /dev/urandom >"$T/raw.img"
json=$(yun image create raw1 --file "$T/raw.img" --disk-format raw --property os=linux \
    --tag first -f json)
raw_id=$(jq -r .id <<<"$json")
jq -e --arg md5 "$(md5sum <"$T/raw.img" | cut -d' ' -f1)" \
    --arg sha "$(sha512sum <"$T/raw.img" | cut -d' ' -f1)" \
    '.status == "active" and .size == 10485760 and .disk_format == "raw"
     and .checksum == $md5 and .os_hash_algo == "sha512" and .os_hash_value == $sha
     and .properties.os == "linux" and .tags == ["first"]
     and (.created_at | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T"))' <<<"$json" >/dev/null ||
    fail "bad record after upload: $json"
yun image download raw1 --file "$T/raw.out"
cmp "$T/raw.img" "$T/raw.out" || fail "raw download (--file) differs"
yun image download "$raw_id" >"$T/raw.stdout"
cmp "$T/raw.img" "$T/raw.stdout" || fail "raw download (stdout) differs"
pass "10 MiB raw image: upload, download to a file and to stdout, byte for byte"

qemu-img create -q -f qcow2 "$T/small.qcow2" 64M
json=$(yun image create qcow1 --file "$T/small.qcow2" --disk-format qcow2 -f json)
jq -e '.status == "active" and .disk_format == "qcow2" and .virtual_size == 67108864' \
    <<<"$json" >/dev/null || fail "bad qcow2 record: $json"
yun image download qcow1 --file "$T/qcow.out"
cmp "$T/small.qcow2" "$T/qcow.out" || fail "qcow2 download differs"
pass "qcow2 image: upload, virtual size, download byte for byte"

# A queued image takes its bytes later with 'image upload'.
yun image create later --disk-format raw -c status -f value | grep -qx queued ||
    fail "create without --file is not queued"
yun image upload later --file "$T/raw.img" -c status -f value | grep -qx active ||
    fail "upload into a queued image did not activate it"
pass "create queued, then upload"

# --- A wrong --checksum kills the image and leaves no bytes. ---------------
set +e
out=$(yun image create badsum --file "$T/raw.img" --disk-format raw \
    --checksum 0123456789abcdef0123456789abcdef 2>&1 >/dev/null)
rc=$?
set -e
[ "$rc" = 1 ] || fail "a wrong checksum exited $rc: $out"
[ "$(wc -l <<<"$out")" = 1 ] || fail "not one line: $out"
grep -Eq '^yun: .+ \([A-Z_]+\)$' <<<"$out" || fail "not 'yun: message (CODE)': $out"
grep -qi 'md5\|checksum' <<<"$out" || fail "unclear error for a wrong checksum: $out"
status_is badsum killed || fail "image with a wrong checksum is $(status_of badsum)"
bad_id=$(yun image show badsum -f value -c id)
[ -z "$(bytes_of "$bad_id")" ] || fail "bytes left of a killed image: $(bytes_of "$bad_id")"
pass "wrong checksum: exit 1, '$out', killed, no bytes left"

# --- A client killed in the middle of an upload. ---------------------------
# The file goes through a FIFO fed with half of it, so the client is
# certainly stopped halfway (blocked reading) when it is killed: a regular
# file races the kill on a fast machine.
head -c 200M /dev/urandom >"$T/big.img"
mkfifo "$T/big.fifo"
# The binary itself, not the yun() function: $! must be the client's pid.
YUN_KEY_FILE=$T/admin.key "$B/cli/yun" image create big --file "$T/big.fifo" --disk-format raw \
    >"$T/big.out" 2>&1 &
big_pid=$!
PIDS+=("$big_pid")
exec 3>"$T/big.fifo"
head -c 100M "$T/big.img" >&3 || fail "the upload stopped reading: $(cat "$T/big.out")"
wait_for 20 status_is big saving || fail "the upload never reached saving"
kill -KILL "$big_pid"
wait "$big_pid" 2>/dev/null || true
exec 3>&-
rm -f "$T/big.img" "$T/big.fifo"
big_id=$(yun image show big -f value -c id)
[ -n "$(bytes_of "$big_id")" ] || fail "no partial bytes during the upload"
# Killed after the idle timeout, never active on the way.
deadline=$((SECONDS + idle + 15))
while :; do
    st=$(status_of big)
    [ "$st" = active ] && fail "a half-uploaded image became active"
    [ "$st" = killed ] && break
    [ "$SECONDS" -lt "$deadline" ] || fail "half-uploaded image still $st after $((idle + 15)) s"
    sleep 0.2
done
[ -z "$(bytes_of "$big_id")" ] || fail "bytes left of a reaped upload: $(bytes_of "$big_id")"
yun audit list --user scheduler --operation image.upload -f json |
    jq -e --arg id "$big_id" 'any(.[]; .target == $id and .result == "ETIMEDOUT")' >/dev/null ||
    fail "no audit record of the reaped upload"
pass "client SIGKILLed halfway: killed after the ${idle} s idle timeout, no bytes left"

# --- Resumed downloads. ----------------------------------------------------
half=3000000 # not a chunk boundary
yun image download raw1 2>/dev/null | head -c "$half" >"$T/part" || true
[ "$(stat -c %s "$T/part")" = "$half" ] || fail "could not take half a download"
yun image download raw1 --file "$T/part"
cmp "$T/raw.img" "$T/part" || fail "resumed download differs"
yun image download raw1 --offset "$half" >"$T/tail"
cat <(head -c "$half" "$T/raw.img") "$T/tail" | cmp - "$T/raw.img" ||
    fail "--offset download differs"
# An explicit --offset into an existing file resumes from there.
head -c 1048576 "$T/raw.img" >"$T/part2"
yun image download raw1 --file "$T/part2" --offset 1048576
cmp "$T/raw.img" "$T/part2" || fail "--file --offset download differs"
# A file longer than the image starts over.
head -c 11M /dev/urandom >"$T/long"
yun image download raw1 --file "$T/long"
cmp "$T/raw.img" "$T/long" || fail "a longer file was not replaced"
# A corrupt prefix is caught by the sha512 of the whole file.
head -c "$half" "$T/raw.img" >"$T/corrupt"
# Write a byte that differs from the one there (the image is random bytes).
byte=$(od -An -tx1 -j 1000 -N 1 "$T/corrupt" | tr -d ' ')
if [ "$byte" = 58 ]; then flip=Y; else flip=X; fi
printf '%s' "$flip" | dd of="$T/corrupt" bs=1 seek=1000 conv=notrunc status=none
set +e
out=$(yun image download raw1 --file "$T/corrupt" 2>&1)
rc=$?
set -e
[ "$rc" = 1 ] || fail "a corrupt resumed file exited $rc"
grep -q 'sha512' <<<"$out" || fail "unclear error for a corrupt resume: $out"
pass "downloads resume from a partial file and --offset; a corrupt prefix is refused"

# --- List: filters and pages. ---------------------------------------------
for i in 1 2 3 4 5; do
    yun image create "pg-$i" --disk-format qcow2 --tag pg --min-disk "$i" >/dev/null
done
# More than a page of the scheduler's default size (25), for the CLI to follow.
for i in $(seq 1 20); do yun image create "bulk-$i" --disk-format raw >/dev/null; done
yun image set pg-3 --public >/dev/null
[ "$(yun image list --tag pg -f json | jq length)" = 5 ] || fail "--tag filter"
[ "$(yun image list --name pg-3 -f value -c name)" = pg-3 ] || fail "--name filter"
[ "$(yun image list --tag pg --visibility public -f value -c name)" = pg-3 ] ||
    fail "--visibility filter"
yun image list --status killed -f json | jq -e 'length == 2 and all(.[]; .status == "killed")' \
    >/dev/null || fail "--status filter"
[ "$(yun image list --disk-format qcow2 --status active -f value -c name)" = qcow1 ] ||
    fail "--disk-format filter"
[ "$(yun image list --tag pg --sort name:asc -f value -c name | tr '\n' ' ')" = \
    "pg-1 pg-2 pg-3 pg-4 pg-5 " ] || fail "--sort name:asc"
[ "$(yun image list --tag pg --sort name:desc -f value -c name | head -1)" = pg-5 ] ||
    fail "--sort name:desc"
ids=()
marker=
for _ in 1 2 3 4; do
    got=$(yun image list --tag pg --sort name:asc --limit 2 ${marker:+--marker "$marker"} \
        -f value -c id)
    [ -n "$got" ] || break
    mapfile -t -O "${#ids[@]}" ids <<<"$got"
    marker=${ids[-1]}
done
[ "${#ids[@]}" = 5 ] || fail "pages of 2 gave ${#ids[@]} images: ${ids[*]}"
[ "$(printf '%s\n' "${ids[@]}" | sort -u | wc -l)" = 5 ] || fail "pages repeat images"
all=$(yun image list -f json)
[ "$(jq length <<<"$all")" = 30 ] || fail "list without --limit gave $(jq length <<<"$all") of 30"
[ "$(jq -r '.[].id' <<<"$all" | sort -u | wc -l)" = 30 ] || fail "list repeats images"
pass "list: tag, name, visibility, status, disk-format filters, sort, pages of 2"

# --- Properties and tags. ---------------------------------------------------
yun image set pg-1 --property arch=x86_64 --property distro=debian --tag t1 --tag t2 \
    --min-ram 512 --name pg-one >/dev/null
json=$(yun image show pg-one -f json)
jq -e '.properties == {"arch": "x86_64", "distro": "debian"} and (.tags | sort) == ["pg", "t1", "t2"]
       and .min_ram == 512 and .min_disk == 1' <<<"$json" >/dev/null ||
    fail "set did not stick: $json"
yun image set pg-one --unset-property distro --remove-tag t1 >/dev/null
json=$(yun image show pg-one -f json)
jq -e '.properties == {"arch": "x86_64"} and (.tags | sort) == ["pg", "t2"]' <<<"$json" \
    >/dev/null || fail "unset did not stick: $json"
pass "set and unset properties, tags, name, min_ram"

# --- Protected images. ------------------------------------------------------
yun image set pg-2 --protected >/dev/null
set +e
out=$(yun image delete pg-2 2>&1)
rc=$?
set -e
[ "$rc" = 1 ] || fail "deleting a protected image exited $rc"
grep -qi protected <<<"$out" || fail "unclear error for a protected image: $out"
status_is pg-2 queued || fail "a refused delete changed the image"
yun image set pg-2 --unprotected >/dev/null
yun image delete pg-2 || fail "delete of an unprotected image failed"
if yun image show pg-2 >/dev/null 2>&1 && ! status_is pg-2 deleted; then
    fail "a deleted image is still $(status_of pg-2)"
fi
set +e
yun image delete no-such-image pg-4 2>"$T/del.err"
rc=$?
set -e
[ "$rc" = 1 ] || fail "deleting a missing image exited $rc"
grep -q "not found\|no image\|No image" "$T/del.err" || fail "unclear error: $(cat "$T/del.err")"
! yun image show pg-4 >/dev/null 2>&1 || status_is pg-4 deleted ||
    fail "delete of several images stopped at the first error"
pass "protected image kept, then deleted; several at once"

# --- Deactivate and reactivate. --------------------------------------------
yun image deactivate raw1 >/dev/null
status_is raw1 deactivated || fail "deactivate: $(status_of raw1)"
yun image reactivate raw1 >/dev/null
status_is raw1 active || fail "reactivate: $(status_of raw1)"
pass "deactivate and reactivate"

# --- Members. ---------------------------------------------------------------
yun image set pg-5 --shared >/dev/null
yun image member add pg-5 project2 >/dev/null
yun image member list pg-5 -f json | jq -e 'length == 1 and .[0].project == "project2"
    and .[0].status == "pending"' >/dev/null || fail "member list after add"
# The CLI runs as an admin, who may answer for another project.
[ "$(yun image member accept pg-5 --project project2 -f value -c status)" = accepted ] ||
    fail "member accept"
[ "$(yun image member list pg-5 -f value -c status)" = accepted ] || fail "accept did not stick"
[ "$(yun image member reject pg-5 --project project2 -f value -c status)" = rejected ] ||
    fail "member reject"
yun image member remove pg-5 project2 >/dev/null
[ "$(yun image member list pg-5 -f json | jq length)" = 0 ] || fail "member remove"
set +e
out=$(yun image member add pg-one project3 2>&1)
rc=$?
set -e
[ "$rc" = 1 ] || fail "a private image took a member: $out"
grep -q "shared" <<<"$out" || fail "unclear error for a member of a private image: $out"
pass "members: add, accept, reject, list, remove; refused on a private image"

# --- A qcow2 file claimed as raw. ------------------------------------------
set +e
out=$(yun image create liar --file "$T/small.qcow2" --disk-format raw 2>&1 >/dev/null)
rc=$?
set -e
[ "$rc" = 1 ] || fail "a qcow2 claimed as raw exited $rc"
grep -qi 'mismatch' <<<"$out" || fail "the refusal does not give the format mismatch: $out"
status_is liar killed || fail "the liar image is $(status_of liar)"
liar_id=$(yun image show liar -f value -c id)
[ -z "$(bytes_of "$liar_id")" ] || fail "bytes left of a refused image"
pass "qcow2 claimed as raw refused: $out"

# --- QED and LUKS headers, whatever is claimed. ----------------------------
qemu-img create -q -f qed "$T/disk.qed" 16M
qemu-img create -q -f luks --object secret,id=s0,data=yun -o key-secret=s0,iter-time=10 \
    "$T/disk.luks" 1M
for f in disk.qed disk.luks; do
    set +e
    out=$(yun image create "hidden-$f" --file "$T/$f" --disk-format raw 2>&1 >/dev/null)
    rc=$?
    set -e
    [ "$rc" = 1 ] || fail "$f claimed as raw exited $rc"
    grep -q 'unsupported-format' <<<"$out" || fail "$f: the refusal does not say why: $out"
    status_is "hidden-$f" killed || fail "$f: the image is $(status_of "hidden-$f")"
    [ -z "$(bytes_of "$(yun image show "hidden-$f" -f value -c id)")" ] ||
        fail "$f: bytes left of a refused image"
done
pass "QED and LUKS files claimed as raw refused: $out"

# --- Tombstones are purged after the retention; the id is free again. ------
chosen=6f1c0000-0000-4000-8000-0000000000aa
yun image create chosen --id "$chosen" --disk-format raw >/dev/null
yun image delete "$chosen"
set +e
out=$(yun image create again --id "$chosen" --disk-format raw 2>&1 >/dev/null)
rc=$?
set -e
[ "$rc" = 1 ] && grep -q taken <<<"$out" || fail "a tombstone's id was taken at once: $out"
purged() {
    yun audit list --operation image.purge -f json |
        jq -e --arg id "$chosen" 'any(.[]; .target == $id and .user == "scheduler")'
}
wait_for 10 purged || fail "no image.purge audit record for the tombstone"
yun image create again --id "$chosen" --disk-format raw -f value -c status | grep -qx queued ||
    fail "the purged id could not be chosen again"
pass "tombstone purged after tombstone_retention_s; its id is free again"

# --- No room: a reserve above the free space refuses uploads. -------------
kill -TERM "$SCHED_PID"
wait "$SCHED_PID" 2>/dev/null || true
mb=$(df -Pm "$IMAGES" | awk 'NR == 2 { print $4 }')
printf '[images]\nstore_min_free_mb = %s\n' $((mb + 1024)) >>"$T/scheduler.conf"
start_scheduler
wait_for 10 yun image list || fail "the scheduler did not start again"
set +e
out=$(yun image create full --file "$T/raw.img" --disk-format raw 2>&1 >/dev/null)
rc=$?
set -e
[ "$rc" = 1 ] || fail "an upload without room exited $rc: $out"
grep -q 'No room for image' <<<"$out" && grep -q '(ENOSPC)' <<<"$out" ||
    fail "unclear refusal without room: $out"
status_is full queued || fail "the refused image is $(status_of full), not queued"
[ -z "$(bytes_of "$(yun image show full -f value -c id)")" ] || fail "bytes left without room"
pass "no room under store_min_free_mb: $out"

# --- The audit log. ----------------------------------------------------------
json=$(yun audit list --operation image.create -f json)
jq -e --arg id "$raw_id" 'any(.[]; .target == $id and .result == "ok")' <<<"$json" \
    >/dev/null || fail "no image.create ok record for raw1: $json"
json=$(yun audit list --operation image. --since 1h -f json)
jq -e 'any(.[]; .operation == "image.delete" and .result == "ok")
       and any(.[]; .operation == "image.delete" and .result != "ok")' <<<"$json" \
    >/dev/null || fail "image.delete records: $json"
jq -e --arg id "$bad_id" 'any(.[]; .target == $id and .result != "ok")' <<<"$json" \
    >/dev/null || fail "no failed record for the wrong checksum: $json"
[ "$(yun audit list --operation image. --limit 3 -f json | jq length)" = 3 ] ||
    fail "audit --limit"
[ "$(yun audit list --until 2000-01-01 -f json | jq length)" = 0 ] || fail "audit --until"
pass "audit: image.create and image.delete with their results"

# --- Usage errors exit 2. ---------------------------------------------------
for args in "image create" "image create x --file $T/raw.img" "image frob" \
    "image list --sort name:up" "image member frob" "audit list --since yesterday" \
    "image set raw1" "image create x --checksum zz --file $T/raw.img --disk-format raw"; do
    set +e
    # shellcheck disable=SC2086
    yun $args >/dev/null 2>&1
    rc=$?
    set -e
    [ "$rc" = 2 ] || fail "'yun $args' exited $rc, not 2"
done
pass "usage errors exit 2"
echo "all image tests passed"
