#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The network model through the CLI only: a real scheduler, a member and a
# reader of one project, a member of another. Networks, subnets, ports and
# security groups are made, listed, changed and deleted; the bad input of
# the "Networks" issue is refused with its stable code and changes nothing:
# overlapping CIDRs in one network, a gateway outside its subnet, an
# exhausted pool, deleting a network that has ports, a rule with an
# invalid port range. Visibility: shared networks are seen and used by
# every project, other objects only by their own.
set -euo pipefail
command -v jq >/dev/null || { echo "skip: no jq"; exit 77; }
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

scheduler_setup
issue_key operator admin
start_scheduler
wait_for 10 yun network list || fail "the scheduler does not serve networks"

yun project create p1 >/dev/null
yun project create p2 >/dev/null
alice_pw=$(new_password alice)
bob_pw=$(new_password bob)
rita_pw=$(new_password rita)
alice() { as_user alice "$alice_pw" p1 "$@"; }
bob() { as_user bob "$bob_pw" p2 "$@"; }
rita() { as_user rita "$rita_pw" p1 "$@"; }
yun user create alice --password-file "$alice_pw" --project p1 >/dev/null
yun user create bob --password-file "$bob_pw" --project p2 >/dev/null
yun user create rita --password-file "$rita_pw" --project p1 >/dev/null
yun role add member --user alice --project p1 >/dev/null
yun role add member --user bob --project p2 >/dev/null
yun role add reader --user rita --project p1 >/dev/null
pass "a scheduler, two projects, a member each and a reader"

# expect_fail NEEDLE COMMAND...: the command fails with a message holding
# NEEDLE; expect_code CODE NEEDLE COMMAND... also with the stable CODE.
# The callers check that nothing changed.
expect_fail() {
    local needle=$1
    shift
    if "$@" >"$T/out" 2>"$T/err"; then
        fail "'$*' succeeded: $(cat "$T/out")"
    fi
    grep -q -- "$needle" "$T/err" || fail "'$*' said: $(cat "$T/err") (wanted '$needle')"
}
expect_code() {
    local code=$1
    shift
    expect_fail "$@"
    grep -q "($code)" "$T/err" || fail "'$*' gave no $code: $(cat "$T/err")"
}
state() { # a digest of what alice sees
    { alice network list -f json; alice subnet list -f json; alice port list -f json
      alice security group list -f json; } | sha256sum
}

# --- networks and subnets -------------------------------------------------------
alice network create net1 --description "first" -f json >"$T/net1.json"
jq -e '.network_type == "vxlan" and .segmentation_id == 1000 and .mtu == 1450' \
    "$T/net1.json" >/dev/null || fail "network defaults: $(cat "$T/net1.json")"
alice subnet create sub1 --network net1 --subnet-range 10.0.0.0/24 \
    --dns-nameserver 192.0.2.53 -f json >"$T/sub1.json"
jq -e '.gateway_ip == "10.0.0.1" and .allocation_pools[0].start == "10.0.0.2" and
       .allocation_pools[0].end == "10.0.0.254" and .enable_dhcp' "$T/sub1.json" >/dev/null ||
    fail "subnet defaults: $(cat "$T/sub1.json")"
[ "$(alice network show net1 -f json | jq -r '.subnets[0]')" = "$(jq -r .id "$T/sub1.json")" ] ||
    fail "the network does not list its subnet"
alice network set net1 --name net-one >/dev/null
alice network show net-one >/dev/null || fail "rename"
alice network set net-one --name net1 >/dev/null
pass "network and subnet created with their defaults, renamed by name"

before=$(state)
expect_code YUN_E_INVALID "overlaps subnet" alice subnet create sub2 --network net1 \
    --subnet-range 10.0.0.128/25
expect_code YUN_E_INVALID "not a host address" alice subnet create sub2 --network net1 \
    --subnet-range 10.1.0.0/24 --gateway 10.2.0.1
expect_fail "not a canonical" alice subnet create sub2 --network net1 --subnet-range 10.1.0.1/24
expect_fail "too small" alice subnet create sub2 --network net1 --subnet-range 10.1.0.0/31
expect_fail "contains the gateway" alice subnet create sub2 --network net1 \
    --subnet-range 10.1.0.0/24 --allocation-pool start=10.1.0.1,end=10.1.0.9
expect_fail "overlaps another pool" alice subnet create sub2 --network net1 \
    --subnet-range 10.1.0.0/24 --allocation-pool start=10.1.0.10,end=10.1.0.20 \
    --allocation-pool start=10.1.0.15,end=10.1.0.30
expect_fail "not within" alice subnet create sub2 --network net1 \
    --subnet-range 10.1.0.0/24 --allocation-pool start=10.1.0.10,end=10.2.0.1
[ "$(state)" = "$before" ] || fail "refused subnets changed the state"
pass "overlapping CIDRs, a gateway outside its subnet and bad pools refused, nothing changed"

# --- ports and an exhausted pool ------------------------------------------------
alice network create tiny >/dev/null
alice subnet create tiny-sub --network tiny --subnet-range 10.9.0.0/29 \
    --allocation-pool start=10.9.0.2,end=10.9.0.3 >/dev/null
alice port create p-a --network tiny -f json >"$T/pa.json"
alice port create p-b --network tiny -f json >"$T/pb.json"
[ "$(jq -r '.fixed_ips[0].ip_address' "$T/pa.json")" = 10.9.0.2 ] || fail "first address"
[ "$(jq -r '.fixed_ips[0].ip_address' "$T/pb.json")" = 10.9.0.3 ] || fail "second address"
jq -e '.mac_address | test("^fa:16:3e:[0-9a-f]{2}:[0-9a-f]{2}:[0-9a-f]{2}$")' "$T/pa.json" \
    >/dev/null || fail "MAC: $(jq -r .mac_address "$T/pa.json")"
before=$(state)
expect_code YUN_E_EXHAUSTED "no free address" alice port create p-c --network tiny
[ "$(state)" = "$before" ] || fail "the refused port changed the state"
alice port delete p-a
alice port create p-c --network tiny -f json >"$T/pc.json"
[ "$(jq -r '.fixed_ips[0].ip_address' "$T/pc.json")" = 10.9.0.2 ] ||
    fail "the released address was not reused"
alice port create p-fixed --network net1 --fixed-ip ip-address=10.0.0.77 -f json >"$T/pf.json"
[ "$(jq -r '.fixed_ips[0].ip_address' "$T/pf.json")" = 10.0.0.77 ] || fail "fixed address"
expect_code YUN_E_CONFLICT "in use" alice port create p-dup --network net1 \
    --fixed-ip subnet=sub1,ip-address=10.0.0.77
pass "ports get addresses and MACs; an exhausted pool refused; addresses released and reused"

before=$(state)
expect_code YUN_E_INUSE "has 1 port" alice network delete net1
expect_fail "port address" alice subnet delete sub1
[ "$(state)" = "$before" ] || fail "refused deletes changed the state"
alice port delete p-fixed
alice network delete net1
expect_fail "not found" alice network show net1
pass "a network with ports is not deleted; without them it goes with its subnets"

# --- security groups ------------------------------------------------------------
alice security group list -f json | jq -e 'map(.name) == ["default"]' >/dev/null ||
    fail "no default group: $(alice security group list -f json)"
[ "$(jq -r '.security_groups[0]' "$T/pc.json")" = \
  "$(alice security group show default -f value -c id)" ] || fail "ports get the default group"
alice security group create web --description "web servers" >/dev/null
alice security group rule create web --ingress --protocol tcp --dst-port 80:443 \
    --remote-ip 0.0.0.0/0 >/dev/null
alice security group rule create web --protocol icmp --icmp-type 8 --remote-group default \
    >/dev/null
before=$(state)
expect_code YUN_E_INVALID "ends before" alice security group rule create web --protocol tcp \
    --dst-port 90:80
expect_code YUN_E_INVALID "1 to 65535" alice security group rule create web --protocol udp \
    --dst-port 0:70000
expect_fail "has no ports" alice security group rule create web --protocol any --dst-port 22
expect_fail "not both" alice security group rule create web --protocol tcp --dst-port 22 \
    --remote-ip 10.0.0.0/8 --remote-group default
expect_fail "this rule already" alice security group rule create web --protocol 6 \
    --dst-port 80:443 --remote-ip 0.0.0.0/0
expect_fail "goes only with its project" alice security group delete default
[ "$(state)" = "$before" ] || fail "refused rules changed the state"
[ "$(alice security group rule list web -f json | jq length)" = 3 ] || fail "rule list"
alice port set p-c --security-group web >/dev/null
expect_fail "used by 1 port" alice security group delete web
rule=$(alice security group rule list web -f json | jq -r 'map(select(.protocol == "icmp"))[0].id')
alice security group rule delete "$rule"
alice port set p-c --no-security-group --disable-port-security >/dev/null
alice security group delete web
pass "groups and rules: invalid ranges refused, default kept, groups in use kept"

# --- visibility and roles -------------------------------------------------------
yun network create public --shared >/dev/null
yun subnet create public-sub --network public --subnet-range 203.0.113.0/24 >/dev/null
bob network list -f json | jq -e 'map(.name) == ["public"]' >/dev/null ||
    fail "bob sees: $(bob network list -f json)"
bob port create on-public --network public >/dev/null || fail "a port on a shared network"
expect_fail "not found" bob network show tiny
expect_fail "not found" bob port show p-c
expect_fail "Only admins" bob network create mine --shared
expect_fail "Policy does not allow" rita network create nope
rita network list -f json | jq -e 'map(.name) | index("tiny") != null' >/dev/null ||
    fail "the reader does not see her project's network"
[ "$(yun network list --all-projects -f json | jq length)" = 2 ] || fail "admin --all-projects"
expect_fail "Only admins" alice network list --all-projects
pass "shared networks for all, the rest per project; readers only read"
