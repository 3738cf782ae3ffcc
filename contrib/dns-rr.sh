#!/bin/sh
# dns-rr.sh NAME PORT [--ttl N] [--ipv4 ADDR]... [--ipv6 ADDR]... [--ech BASE64]
#
# Print the DNS records that point HTTP/3 clients at a pesigitg VIP: an HTTPS
# record (RFC 9460) with alpn h3 (and h2 for fallback), the port, address hints and
# optionally an ECH config, plus the A/AAAA records the hints mirror. Paste the
# output into a zone file.
set -eu

usage() {
    echo "usage: dns-rr.sh NAME PORT [--ttl N] [--ipv4 ADDR]... [--ipv6 ADDR]... [--ech BASE64]" >&2
    exit 2
}
[ $# -ge 2 ] || usage
name=$1
port=$2
shift 2
case "$port" in
    ''|*[!0-9]*) echo "dns-rr.sh: port '$port' is not a number" >&2; exit 2 ;;
esac
if [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
    echo "dns-rr.sh: port $port is outside 1..65535" >&2
    exit 2
fi
ttl=300
v4=""
v6=""
ech=""
while [ $# -gt 0 ]; do
    case "$1" in
        --ttl) [ $# -ge 2 ] || usage; ttl=$2; shift 2 ;;
        --ipv4) [ $# -ge 2 ] || usage; v4="${v4:+$v4,}$2"; shift 2 ;;
        --ipv6) [ $# -ge 2 ] || usage; v6="${v6:+$v6,}$2"; shift 2 ;;
        --ech) [ $# -ge 2 ] || usage; ech=$2; shift 2 ;;
        *) usage ;;
    esac
done
case "$name" in
    *.) ;;
    *) name="$name." ;;
esac

# RFC 9460 §2.4.3: ServiceMode, priority 1, "." = the owner name itself.
params="alpn=\"h3,h2\" port=$port"
[ -n "$v4" ] && params="$params ipv4hint=$v4"
[ -n "$v6" ] && params="$params ipv6hint=$v6"
[ -n "$ech" ] && params="$params ech=\"$ech\""
echo "$name $ttl IN HTTPS 1 . $params"
old_ifs=$IFS
IFS=,
for addr in $v4; do echo "$name $ttl IN A $addr"; done
for addr in $v6; do echo "$name $ttl IN AAAA $addr"; done
IFS=$old_ifs
