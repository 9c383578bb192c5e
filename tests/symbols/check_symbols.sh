#!/usr/bin/env bash
# Symbol test (CTest `symbols`): the shared library, the linker version script
# and the public headers must agree.
#   check_symbols.sh <libeffml.so> <lib/libeffml.map> <include dir> <C compiler> [nm]
# 1. every dynamic symbol defined by the .so starts with `effml_`;
# 2. exported symbols == names listed in the version script;
# 3. version-script names == functions declared with EFFML_API in the headers.
# The headers are read through the C preprocessor with EFFML_API redefined to
# a marker, so comments, macros and multi-line declarations need no parsing.
# This is the test that catches a new public function missing from the map
# (it would be silently hidden), a map entry without an implementation, or a
# helper that leaked out of the library without the effml_ prefix.
set -euo pipefail

so=$1 map=$2 incdir=$3 cc=$4 nm=${5:-nm}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Dynamic symbols defined by the library (type A entries are version nodes).
"$nm" -D --defined-only "$so" | awk '$2 != "A" { sub(/@.*/, "", $3); print $3 }' |
  sort -u >"$tmp/so"

# Names in the version script: `    effml_xxx;` lines (comments hold no `;`-terminated names).
sed -n 's/^[[:space:]]*\([A-Za-z_][A-Za-z0-9_]*\)[[:space:]]*;.*$/\1/p' "$map" | sort -u >"$tmp/map"

# Functions declared with EFFML_API in every public header.
{
  for h in "$incdir"/effml/*.h; do printf '#include <effml/%s>\n' "$(basename "$h")"; done
} >"$tmp/all.c"
"$cc" -E -P -DEFFML_EXPERIMENTAL -DEFFML_API=EFFML__API_MARKER -I "$incdir" "$tmp/all.c" |
  tr '\n' ' ' | sed 's/[;{}]/\n/g' |
  sed -n 's/.*EFFML__API_MARKER[^(]*[^A-Za-z0-9_(]\([A-Za-z_][A-Za-z0-9_]*\)[[:space:]]*(.*/\1/p' |
  sort -u >"$tmp/hdr"

status=0
report() { # title file
  if [ -s "$2" ]; then
    echo "FAIL: $1:" >&2
    sed 's/^/  /' "$2" >&2
    status=1
  fi
}
grep -v '^effml_' "$tmp/so" >"$tmp/bad_prefix" || true
report "symbols exported by $so without the effml_ prefix" "$tmp/bad_prefix"
comm -23 "$tmp/so" "$tmp/map" >"$tmp/so_not_map"
report "exported by the library but missing from $map" "$tmp/so_not_map"
comm -13 "$tmp/so" "$tmp/map" >"$tmp/map_not_so"
report "listed in $map but not defined by the library (unimplemented?)" "$tmp/map_not_so"
comm -23 "$tmp/hdr" "$tmp/map" >"$tmp/hdr_not_map"
report "declared EFFML_API in $incdir/effml/*.h but missing from $map" "$tmp/hdr_not_map"
comm -13 "$tmp/hdr" "$tmp/map" >"$tmp/map_not_hdr"
report "listed in $map but not declared EFFML_API in any header" "$tmp/map_not_hdr"

# Each area's block of the map stays sorted (C locale) and names appear once,
# so that concurrent additions merge cleanly.
LC_ALL=C awk '
  /\/\*/ { block = $0; prev = ""; next }
  /^[[:space:]]*effml_[A-Za-z0-9_]*[[:space:]]*;/ {
    name = $1; sub(/;.*/, "", name)
    if (prev != "" && name <= prev) printf "  %s: %s listed after %s\n", block, name, prev
    prev = name
  }' "$map" >"$tmp/unsorted"
report "$map blocks not sorted (or a name repeated)" "$tmp/unsorted"
sed -n 's/^[[:space:]]*\(effml_[A-Za-z0-9_]*\)[[:space:]]*;.*$/\1/p' "$map" | sort | uniq -d >"$tmp/dup"
report "names listed more than once in $map" "$tmp/dup"

if [ "$status" -eq 0 ]; then
  echo "symbols OK: $(wc -l <"$tmp/so") exported, map and headers agree"
fi
exit "$status"
