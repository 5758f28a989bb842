#!/usr/bin/env bash
# Two test "hosts" on this machine: Linux network namespaces joined by a veth pair.
#
#   scripts/netns.sh up       create both namespaces and the link (idempotent)
#   scripts/netns.sh down     stop what runs inside them, remove the namespaces and the link
#   scripts/netns.sh status   exit 0 when both hosts are up and configured, and list them
#
# Host A is namespace $SIMAI_NETNS_A (default simai-a) with address $SIMAI_NETNS_ADDR_A
# (default 10.201.0.1); host B is $SIMAI_NETNS_B (simai-b) with $SIMAI_NETNS_ADDR_B
# (10.201.0.2), both in a /$SIMAI_NETNS_PREFIXLEN (24) that exists only on the link between
# them. The link is created with each end already inside its namespace, so the machine's own
# network never carries these addresses. Run a command on a host with
# `ip netns exec simai-a COMMAND`.
#
# Needs root and iproute2's `ip`. Exit status 2 means network namespaces cannot be used here
# (not root, no `ip`, or the kernel or sandbox refuses `ip netns add`); 1 is any other failure.
set -Eeuo pipefail

NS_A=${SIMAI_NETNS_A:-simai-a}
NS_B=${SIMAI_NETNS_B:-simai-b}
ADDR_A=${SIMAI_NETNS_ADDR_A:-10.201.0.1}
ADDR_B=${SIMAI_NETNS_ADDR_B:-10.201.0.2}
PREFIXLEN=${SIMAI_NETNS_PREFIXLEN:-24}
IF_A=${NS_A:0:12}-v0
IF_B=${NS_B:0:12}-v0

die() {
    echo "netns.sh: $*" >&2
    exit 1
}

unavailable() {
    echo "netns.sh: network namespaces are unavailable: $*" >&2
    exit 2
}

preflight() {
    [[ $(id -u) -eq 0 ]] || unavailable "must run as root (uid $(id -u))"
    command -v ip >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin
    command -v ip >/dev/null 2>&1 || unavailable "iproute2's \`ip\` not found (apt-get install iproute2)"
    ip netns list >/dev/null 2>&1 || unavailable "\`ip netns\` is not supported by this \`ip\`"
}

ns_exists() { ip netns list | awk '{print $1}' | grep -qxF "$1"; }

# True when namespace $1 has lo up and interface $2 up with address $3/$PREFIXLEN.
ns_ok() {
    local ns=$1 dev=$2 addr=$3
    ns_exists "$ns" || return 1
    ip -n "$ns" -o link show lo 2>/dev/null | grep -q 'state UNKNOWN\|,UP' || return 1
    ip -n "$ns" -o link show "$dev" 2>/dev/null | grep -q 'state UP' || return 1
    ip -n "$ns" -o -4 addr show dev "$dev" 2>/dev/null | grep -qF " $addr/$PREFIXLEN " || return 1
}

# Stop every process inside namespace $1: SIGTERM, up to 5 s, then SIGKILL.
stop_inside() {
    local ns=$1 pids i
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [[ -n $pids ]] || return 0
    echo "netns.sh: stopping processes still running in $ns: $(echo $pids)" >&2
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    for i in $(seq 50); do
        [[ -z $(ip netns pids "$ns" 2>/dev/null) ]] && return 0
        sleep 0.1
    done
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    # shellcheck disable=SC2086
    [[ -z $pids ]] || kill -KILL $pids 2>/dev/null || true
}

cmd_status() {
    preflight
    local ok=0
    if ns_ok "$NS_A" "$IF_A" "$ADDR_A"; then
        echo "$NS_A $ADDR_A/$PREFIXLEN dev $IF_A up"
    else
        echo "$NS_A: not up"
        ok=1
    fi
    if ns_ok "$NS_B" "$IF_B" "$ADDR_B"; then
        echo "$NS_B $ADDR_B/$PREFIXLEN dev $IF_B up"
    else
        echo "$NS_B: not up"
        ok=1
    fi
    return $ok
}

cmd_down() {
    preflight
    local ns
    for ns in "$NS_A" "$NS_B"; do
        if ns_exists "$ns"; then
            stop_inside "$ns"
            ip netns delete "$ns" || die "cannot delete namespace $ns"
        fi
    done
    # Deleting a namespace deletes its end of the veth pair, and with it the other end; this
    # covers an `up` interrupted between creating the pair and moving it.
    for dev in "$IF_A" "$IF_B"; do
        if ip link show "$dev" >/dev/null 2>&1; then
            ip link delete "$dev" || die "cannot delete interface $dev"
        fi
    done
}

cmd_up() {
    preflight
    [[ $NS_A != "$NS_B" ]] || die "the two namespaces need different names (both $NS_A)"
    [[ $ADDR_A != "$ADDR_B" ]] || die "the two hosts need different addresses (both $ADDR_A)"
    if cmd_status >/dev/null 2>&1; then
        cmd_status
        return 0
    fi
    # Anything half made (an earlier interrupted `up`) is removed and made again.
    cmd_down
    local err
    if ! err=$(ip netns add "$NS_A" 2>&1); then
        unavailable "\`ip netns add $NS_A\` failed: $err"
    fi
    trap 'cmd_down >/dev/null 2>&1 || true' ERR
    ip netns add "$NS_B"
    ip link add "$IF_A" netns "$NS_A" type veth peer name "$IF_B" netns "$NS_B"
    ip -n "$NS_A" link set lo up
    ip -n "$NS_B" link set lo up
    ip -n "$NS_A" addr add "$ADDR_A/$PREFIXLEN" dev "$IF_A"
    ip -n "$NS_B" addr add "$ADDR_B/$PREFIXLEN" dev "$IF_B"
    ip -n "$NS_A" link set "$IF_A" up
    ip -n "$NS_B" link set "$IF_B" up
    local i
    for i in $(seq 50); do
        cmd_status >/dev/null 2>&1 && break
        sleep 0.1
    done
    trap - ERR
    cmd_status || die "the hosts did not come up"
}

case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
*)
    echo "usage: $0 up|down|status" >&2
    exit 1
    ;;
esac
