#!/bin/sh
# dsr-backend.sh [--remove] [--dry-run] VIP [VIP...]
#
# Prepare a backend for Direct Server Return: put each VIP on the loopback interface
# (so the backend accepts and answers packets addressed to it) and, for IPv4 VIPs,
# set the ARP sysctls that stop it from answering ARP for the VIP (only the load
# balancer may). IPv6 needs no sysctl: Linux answers neighbour solicitations only for
# addresses of the interface they arrive on, and lo is not on the wire.
# --remove takes the VIPs off again (the sysctls stay: other VIPs may need them).
# --dry-run prints the commands instead of running them.
set -eu

remove=0
dry=0
vips=""
for arg in "$@"; do
    case "$arg" in
        --remove) remove=1 ;;
        --dry-run) dry=1 ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "dsr-backend.sh: unknown option $arg" >&2; exit 2 ;;
        *) vips="$vips $arg" ;;
    esac
done
if [ -z "$vips" ]; then
    echo "usage: dsr-backend.sh [--remove] [--dry-run] VIP [VIP...]" >&2
    exit 2
fi

run() {
    if [ "$dry" -eq 1 ]; then
        echo "$*"
    else
        "$@"
    fi
}

# Whether lo holds the address already, however it is spelled: iproute2 parses both
# sides (fd00::100 and fd00:0:0::100 are one address).
on_lo() {
    [ -n "$(ip -o addr show dev lo to "$1" 2>/dev/null)" ]
}

ipv4=0
for vip in $vips; do
    case "$vip" in
        *:*) prefix=128
             if [ ! -d /proc/sys/net/ipv6 ]; then
                 echo "dsr-backend.sh: $vip: this kernel has IPv6 disabled (ipv6.disable=1" \
                      "on its command line)" >&2
                 exit 1
             fi
             if [ "$(cat /proc/sys/net/ipv6/conf/lo/disable_ipv6)" = 1 ]; then
                 echo "dsr-backend.sh: $vip: IPv6 is disabled on lo" \
                      "(net.ipv6.conf.lo.disable_ipv6 = 1); enable it with" \
                      "'sysctl -w net.ipv6.conf.lo.disable_ipv6=0' (and make it persistent" \
                      "in /etc/sysctl.d)" >&2
                 exit 1
             fi ;;
        *.*.*.*) prefix=32; ipv4=1 ;;
        *) echo "dsr-backend.sh: $vip is not an IPv4 or IPv6 address" >&2; exit 2 ;;
    esac
    if [ "$remove" -eq 1 ]; then
        if [ "$dry" -eq 0 ] && ! on_lo "$vip/$prefix"; then
            echo "dsr-backend.sh: $vip is not on lo" >&2
            continue
        fi
        run ip addr del "$vip/$prefix" dev lo
    else
        if [ "$dry" -eq 0 ] && on_lo "$vip/$prefix"; then
            continue    # already there
        fi
        run ip addr add "$vip/$prefix" dev lo
    fi
done
if [ "$remove" -eq 0 ] && [ "$ipv4" -eq 1 ]; then
    for conf in all default lo; do
        run sysctl -q -w "net.ipv4.conf.$conf.arp_ignore=1"
        run sysctl -q -w "net.ipv4.conf.$conf.arp_announce=2"
    done
fi
