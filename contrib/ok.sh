#!/bin/sh
# ok.sh IFACE|SOCKET -- exit 0 when the pesigitgd on IFACE (or at SOCKET) says its
# /health is ok, 1 otherwise. For keepalived track scripts, load-balancer-of-load-
# balancer checks and monitoring. Needs only a shell and pesigitg-ctl.
set -u
if [ $# -ne 1 ]; then
    echo "usage: $0 IFACE|/path/to/status.sock" >&2
    exit 2
fi
case "$1" in
    /*) exec pesigitg-ctl -s "$1" health >/dev/null ;;
    *)  exec pesigitg-ctl -i "$1" health >/dev/null ;;
esac
