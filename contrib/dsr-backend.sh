#!/bin/sh
# dsr-backend.sh [--remove] [--dry-run] VIP [VIP...]
#
# Prepare a backend for Direct Server Return: put each VIP on the loopback interface
# (so the backend accepts and answers packets addressed to it) and set the ARP
# sysctls that stop it from answering ARP for the VIP (only the load balancer may).
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
        -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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

for vip in $vips; do
    case "$vip" in
        *:*) prefix=128 ;;
        *.*.*.*) prefix=32 ;;
        *) echo "dsr-backend.sh: $vip is not an IPv4 or IPv6 address" >&2; exit 2 ;;
    esac
    if [ "$remove" -eq 1 ]; then
        run ip addr del "$vip/$prefix" dev lo
    else
        if [ "$dry" -eq 0 ] && ip -o addr show dev lo | grep -q " $vip/$prefix "; then
            continue    # already there
        fi
        run ip addr add "$vip/$prefix" dev lo
    fi
done
if [ "$remove" -eq 0 ]; then
    for conf in all default lo; do
        run sysctl -q -w "net.ipv4.conf.$conf.arp_ignore=1"
        run sysctl -q -w "net.ipv4.conf.$conf.arp_announce=2"
    done
fi
