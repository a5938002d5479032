#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Identity through the CLI only, against a real scheduler on loopback:
# login and logout with the token cache (mode 0600, in YUN_CONFIG_DIR);
# no token, no service; two projects isolated (a member of p2 gets "not
# found" for p1's image); a reader cannot create; hosts are admins' only;
# a created keypair is accepted by ssh-keygen with the same fingerprint,
# and an imported one too; a password change, a disable and a lockout;
# rotate-keys keeps tokens for one rotation and the CLI logs in again by
# itself after the second; set-password from another process reaches the
# running scheduler; init without a password says how to set one; no
# password ever reaches a log.
set -euo pipefail
for tool in jq ssh-keygen; do
    command -v "$tool" >/dev/null || { echo "skip: no $tool"; exit 77; }
done
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
S() { "$B/scheduler/yun-scheduler" -c "$T/scheduler.conf" "$@"; }

scheduler_setup
issue_key operator admin
start_scheduler
wait_for 10 yun project list || fail "the scheduler did not start serving"
pass "the admin made by init logs in by itself (YUN_USERNAME, YUN_PASSWORD_FILE)"

# --- login, logout, the token cache ----------------------------------------
rm -rf "$T/config"
json=$(yun login --user admin --password-file "$ADMIN_PASSWORD_FILE" --project admin -f json)
jq -e '.user == "admin" and .project == "admin" and (.roles | test("admin"))' <<<"$json" \
    >/dev/null || fail "login: $json"
[ "$(stat -c %a "$T/config/token")" = 600 ] || fail "the token cache is not 0600"
grep -q '^token = ' "$T/config/token" || fail "no token in the cache"
before=$(grep '^token = ' "$T/config/token")
yun host list >/dev/null || fail "host list with the cached token"
[ "$(grep '^token = ' "$T/config/token")" = "$before" ] || fail "a valid cached token was replaced"
yun logout 2>/dev/null || fail "logout"
[ ! -e "$T/config/token" ] || fail "logout left the token cache"
noenv() { env -u YUN_USERNAME -u YUN_PASSWORD_FILE -u YUN_PASSWORD "$@"; }
set +e
out=$(noenv YUN_KEY_FILE="$T/admin.key" "$B/cli/yun" image list 2>&1)
rc=$?
set -e
[ "$rc" = 1 ] || fail "a command without a token exited $rc: $out"
grep -q "Authentication required" <<<"$out" || fail "unclear error without a token: $out"
grep -q "yun login" <<<"$out" || fail "no hint to log in: $out"
# With the environment's credentials, commands log in by themselves again.
yun image list >/dev/null || fail "no login from the environment"
[ -e "$T/config/token" ] || fail "the automatic login cached no token"
pass "login, token cache (0600), logout, no token refused, automatic login"

# --- projects, users, roles -----------------------------------------------------
yun project create p1 --description "first project" >/dev/null
yun project create p2 >/dev/null
alice_pw=$(new_password alice)
bob_pw=$(new_password bob)
rita_pw=$(new_password rita)
alice() { as_user alice "$alice_pw" p1 "$@"; }
bob() { as_user bob "$bob_pw" p2 "$@"; }
rita() { as_user rita "$rita_pw" p1 "$@"; }
yun user create alice --password-file "$alice_pw" --project p1 --email alice@example.org \
    >/dev/null
yun user create bob --password-file "$bob_pw" --project p2 >/dev/null
yun user create rita --password-file "$rita_pw" --project p1 >/dev/null
yun role add member --user alice --project p1 >/dev/null
yun role add member --user bob --project p2 >/dev/null
yun role add reader --user rita --project p1 >/dev/null
[ "$(yun role assignment list --project p1 -f json | jq length)" = 2 ] ||
    fail "role assignments of p1"
[ "$(yun user show alice -f value -c email)" = alice@example.org ] || fail "user show"
yun user list -f json | jq -e 'map(.name) == ["admin", "alice", "bob", "rita"]' >/dev/null ||
    fail "user list: $(yun user list -f json)"
pass "projects, users and roles made through the CLI"

# --- isolation -----------------------------------------------------------------
head -c 65536 /dev/urandom >"$T/a.img"
alice image create a1 --file "$T/a.img" --disk-format raw >/dev/null
a1=$(alice image show a1 -f value -c id)
[ "$(alice image list -f value -c name)" = a1 ] || fail "alice's list"
set +e
out=$(bob image show "$a1" 2>&1)
rc=$?
set -e
[ "$rc" = 1 ] || fail "bob saw p1's image: $out"
grep -q "not found" <<<"$out" || fail "p1's image is not 'not found' for bob: $out"
[ -z "$(bob image list -f value -c name)" ] || fail "bob lists p1's image"
if bob image delete "$a1" >/dev/null 2>&1; then fail "bob deleted p1's image"; fi
pass "a member of p2 cannot see p1's image (not found)"

[ "$(rita image list -f value -c name)" = a1 ] || fail "the reader's list"
set +e
out=$(rita image create r1 --file "$T/a.img" --disk-format raw 2>&1)
rc=$?
set -e
[ "$rc" = 1 ] || fail "a reader created an image: $out"
grep -q "YUN_E_DENIED" <<<"$out" || fail "unclear error for a reader: $out"
pass "a reader lists but cannot create"

set +e
out=$(alice host list 2>&1)
rc=$?
set -e
[ "$rc" = 1 ] && grep -q "Policy does not allow 'host.list'" <<<"$out" ||
    fail "a member listed hosts: $out"
yun host list >/dev/null || fail "the admin cannot list hosts"
if alice user list >/dev/null 2>&1; then fail "a member listed users"; fi
pass "hosts and users are the admin's"

# --- keypairs ------------------------------------------------------------------
alice keypair create demo >"$T/demo.pem" 2>"$T/demo.err"
chmod 600 "$T/demo.pem"
ours=$(alice keypair show demo -f value -c fingerprint)
theirs=$(ssh-keygen -l -f "$T/demo.pem" | awk '{print $2}')
[ -n "$ours" ] && [ "$ours" = "$theirs" ] || fail "fingerprints differ: '$ours' vs '$theirs'"
ssh-keygen -l -f "$T/demo.pem" | grep -q "(ED25519)" || fail "not an Ed25519 key"
[ "$(ssh-keygen -y -f "$T/demo.pem" | cut -d' ' -f1-2)" = \
  "$(alice keypair show demo -f value -c public_key | cut -d' ' -f1-2)" ] ||
    fail "the private key does not match the stored public key"
md5=$(ssh-keygen -l -E md5 -f "$T/demo.pem" | awk '{print $2}')
[ "$md5" = "$(alice keypair show demo -f value -c fingerprint_md5)" ] ||
    fail "md5 fingerprints differ"
alice keypair create big --type rsa >"$T/big.pem" 2>/dev/null
chmod 600 "$T/big.pem"
ssh-keygen -l -f "$T/big.pem" | grep -q "^3072 .*(RSA)" || fail "not an RSA-3072 key"
[ "$(ssh-keygen -l -f "$T/big.pem" | awk '{print $2}')" = \
  "$(alice keypair show big -f value -c fingerprint)" ] || fail "RSA fingerprint"
ssh-keygen -q -t ed25519 -N '' -C mine -f "$T/mine" </dev/null
alice keypair import mine --public-key "$T/mine.pub" >/dev/null
[ "$(ssh-keygen -l -f "$T/mine.pub" | awk '{print $2}')" = \
  "$(alice keypair show mine -f value -c fingerprint)" ] ||
    fail "imported fingerprint"
[ "$(alice keypair list -f value -c name | tr '\n' ' ')" = "big demo mine " ] ||
    fail "keypair list"
if bob keypair show demo >/dev/null 2>&1; then fail "bob saw alice's keypair"; fi
alice keypair delete mine
pass "keypairs: created ones pass ssh-keygen -l with the same fingerprints; import; per user"

# --- password change, disable, lockout ---------------------------------------------
alice image list >/dev/null
alice_new=$(new_password alice-new)
yun user set alice --password-file "$alice_new" >/dev/null
set +e
out=$(alice image list 2>&1)
rc=$?
set -e
[ "$rc" = 1 ] && grep -q "YUN_E_AUTH" <<<"$out" || fail "the old password still works: $out"
as_user alice "$alice_new" p1 image list >/dev/null || fail "the new password does not work"
yun user disable bob >/dev/null
set +e
out=$(bob image list 2>&1)
set -e
grep -q "disabled" <<<"$out" || fail "a disabled user was not refused: $out"
yun user enable bob >/dev/null
bob image list >/dev/null || fail "an enabled user was refused"
pass "a password change and a disable revoke tokens; the new password works"

wrong=$(new_password wrong)
for _ in 1 2 3 4 5; do
    if yun login --user rita --password-file "$wrong" >/dev/null 2>&1; then
        fail "a wrong password logged in"
    fi
done
set +e
out=$(YUN_CONFIG_DIR=$T/config-lock yun login --user rita --password-file "$rita_pw" 2>&1)
set -e
grep -q "locked until" <<<"$out" || fail "no lockout after 5 failures: $out"
yun user set rita --unlock >/dev/null
YUN_CONFIG_DIR=$T/config-lock yun login --user rita --password-file "$rita_pw" --project p1 \
    >/dev/null || fail "unlock"
pass "five failed logins lock the user out; an admin unlocks"

json=$(yun audit list --operation login -f json)
jq -e 'any(.[]; .result == "YUN_E_AUTH" and .target == "rita")' <<<"$json" >/dev/null ||
    fail "no failed login in the audit log"
jq -e 'any(.[]; .result == "ok" and .target == "alice")' <<<"$json" >/dev/null ||
    fail "no successful login in the audit log"
yun audit list --user alice -f json | jq -e 'any(.[]; .operation == "image.create")' \
    >/dev/null || fail "audit by user name"
yun audit list -f json | jq -e 'any(.[]; .operation == "host.list" and .result == "YUN_E_DENIED")' \
    >/dev/null || fail "the denied host list was not audited"
pass "the audit log has the failed and successful logins and the denials"

# --- key rotation ----------------------------------------------------------------
tok() { grep '^token = ' "$T/config/token"; }
yun image list >/dev/null
t0=$(tok)
S rotate-keys >/dev/null
kill -HUP "$SCHED_PID"
wait_for 5 grep -q 'msg="token keys loaded' "$T/scheduler.log" || fail "no reload on SIGHUP"
yun image list >/dev/null || fail "a token did not survive one rotation"
[ "$(tok)" = "$t0" ] || fail "the CLI logged in again after one rotation"
S rotate-keys >/dev/null
# The cron notices the key directory changed, without a signal.
sleep 1.5
yun image list >/dev/null || fail "the CLI did not log in again after two rotations"
[ "$(tok)" != "$t0" ] || fail "the token of two rotations ago still works"
grep -q "error=YUN_E_TOKEN_KEY" "$T/scheduler.log" || fail "the retired token was not refused"
pass "a token survives one key rotation, not two; the CLI logs in again"

# --- set-password from another process --------------------------------------------
as_user alice "$alice_new" p1 image list >/dev/null
echo "alice-third-password" >"$T/alice3.password"
chmod 600 "$T/alice3.password"
S set-password alice --password-file "$T/alice3.password" >/dev/null
sleep 1.5
set +e
out=$(as_user alice "$alice_new" p1 image list 2>&1)
set -e
grep -q "YUN_E_AUTH" <<<"$out" || fail "set-password did not reach the running scheduler: $out"
as_user alice "$T/alice3.password" p1 image list >/dev/null || fail "set-password's password"
pass "set-password from another process revokes the running scheduler's tokens"

# --- init without a password ---------------------------------------------------------
sed "s|$T/sched|$T/sched2|; s|$T/cluster.key|$T/cluster2.key|" "$T/scheduler.conf" \
    >"$T/scheduler2.conf"
out=$("$B/scheduler/yun-scheduler" -c "$T/scheduler2.conf" init </dev/null)
grep -q "no admin user was created" <<<"$out" || fail "init without a password: $out"
grep -q "set-password admin --password-file" <<<"$out" || fail "no hint: $out"
out=$("$B/scheduler/yun-scheduler" -c "$T/scheduler2.conf" set-password admin \
    --password-file "$ADMIN_PASSWORD_FILE")
grep -q "password of user 'admin' set" <<<"$out" || fail "set-password admin: $out"
pass "init without a password or a terminal makes no admin and says how"

# --- secrets stay out of the logs -----------------------------------------------
for f in "$ADMIN_PASSWORD_FILE" "$alice_pw" "$alice_new" "$bob_pw" "$T/alice3.password"; do
    pw=$(cat "$f")
    if grep -rqF -- "$pw" "$T"/*.log "$T"/*.err 2>/dev/null; then
        fail "a password is in a log"
    fi
done
if grep -qF -- "$(tok | cut -d' ' -f3)" "$T/scheduler.log"; then fail "a token is in the log"; fi
pass "no password or token in the logs"
echo "all identity tests passed"
