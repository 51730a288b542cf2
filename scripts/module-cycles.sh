#!/bin/sh
# Lists the pairs of top-level modules of src/ that import each other
# (A names `crate::B` and B names `crate::A`), then their count.
# A module is src/NAME.rs or src/NAME/; comments are not counted.
# Usage: scripts/module-cycles.sh   (from the repository root)
set -eu
cd "$(dirname "$0")/.."
deps=$(mktemp)
trap 'rm -f "$deps"' EXIT
for path in src/*.rs src/*/; do
    from=$(basename "$path" .rs)
    case "$from" in lib | main) continue ;; esac
    find "$path" -name '*.rs' -exec cat {} + |
        sed 's://.*$::' |
        grep -o 'crate::[a-z_]*' |
        sed 's/crate:://' | sort -u |
        while read -r to; do
            [ "$to" != "$from" ] && echo "$from $to"
        done
done | sort -u >"$deps"
# `state` is the store's old name.
sed -i 's/ state$/ store/' "$deps"
sort -u -o "$deps" "$deps"
awk '{ edge[$1 " " $2] = 1 } END {
    for (e in edge) { split(e, p, " ");
        if (p[1] < p[2] && ((p[2] " " p[1]) in edge)) print p[1] "<->" p[2] }
}' "$deps" | sort >"$deps.cycles"
cat "$deps.cycles"
echo "cycles: $(wc -l <"$deps.cycles")"
rm -f "$deps.cycles"
