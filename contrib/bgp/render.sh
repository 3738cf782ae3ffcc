#!/bin/sh
# render.sh TEMPLATE NAME=VALUE... -- print TEMPLATE with each @NAME@ replaced by VALUE,
# and refuse to print one that still has a @...@ placeholder.
set -eu
if [ $# -lt 1 ]; then
    echo "usage: render.sh TEMPLATE NAME=VALUE..." >&2
    exit 2
fi
template=$1
shift
script=""
for pair in "$@"; do
    name=${pair%%=*}
    value=${pair#*=}
    case "$name" in
        ''|*[!A-Z0-9_]*) echo "render.sh: bad name in '$pair'" >&2; exit 2 ;;
    esac
    escaped=$(printf '%s' "$value" | sed 's/[\/&|]/\\&/g')
    script="$script s|@$name@|$escaped|g;"
done
out=$(sed -e "$script" "$template")
left=$(printf '%s\n' "$out" | grep -o '@[A-Z0-9_]*@' | sort -u | tr '\n' ' ' || true)
if [ -n "$left" ]; then
    echo "render.sh: $template still needs: $left" >&2
    exit 1
fi
printf '%s\n' "$out"
