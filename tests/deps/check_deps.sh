#!/usr/bin/env bash
# Layer check of the library's object files (docs/architecture.md).
#
#   check_deps.sh ALLOWED NM OBJECT...
#
# Each object's area is the name of the folder it was compiled from
# (lib/<area>/<file>.c -> .../<area>/<file>.c.o).  With `nm -P` it lists what
# every object defines and what it leaves undefined, and fails when
#   - an area calls a symbol defined in another area that its line in
#     ALLOWED ("area: lower-area ...") does not list,
#   - an area has no line in ALLOWED,
#   - a layer ops table (a data symbol named *_ops) is file-local or is not
#     referenced by the registry area (lib/registry/layer_kinds.c).
# Prints one line per violation; exit 0 when there is none.
set -euo pipefail
if [ "$#" -lt 3 ]; then
  echo "usage: $0 ALLOWED NM OBJECT..." >&2
  exit 2
fi
allowed=$1 nm=$2
shift 2
syms=$(mktemp)
trap 'rm -f "$syms"' EXIT
# One nm run: "path/<area>/<file>.o: name type [value size]".
"$nm" -A -P "$@" | awk '{
    f = $1; sub(/:$/, "", f)
    n = split(f, parts, "/")
    a = parts[n - 1]; f = parts[n]
    if ($3 == "U") print "U", a, $2, f
    else if ($3 ~ /^[TDBRVWC]$/) print "D", a, $2, f
    else if ($3 ~ /^[dr]$/ && $2 ~ /^[A-Za-z_][A-Za-z0-9_]*_ops$/) print "L", a, $2, f
  }' >"$syms"
awk -v allowed="$allowed" '
  BEGIN {
    while ((getline line < allowed) > 0) {
      sub(/#.*/, "", line)
      if (line !~ /:/) continue
      split(line, kv, ":")
      a = kv[1]; gsub(/[ \t]/, "", a)
      known[a] = 1
      n = split(kv[2], ds, /[ \t]+/)
      for (i = 1; i <= n; ++i) if (ds[i] != "") ok[a, ds[i]] = 1
    }
    bad = 0
  }
  $1 == "D" { def[$3] = $2; if ($3 ~ /^[A-Za-z_][A-Za-z0-9_]*_ops$/) ops[$3] = $4; areas[$2] = 1; next }
  $1 == "U" { use[++nu] = $0; areas[$2] = 1; next }
  $1 == "L" { printf "%s/%s: layer ops table %s is file-local: make it extern and register it in lib/registry/layer_kinds.c\n", $2, $4, $3; bad = 1 }
  END {
    for (a in areas)
      if (!(a in known)) { printf "area %s has no line in %s\n", a, allowed; bad = 1 }
    for (i = 1; i <= nu; ++i) {
      split(use[i], u, " ")
      a = u[2]; s = u[3]; f = u[4]
      if (a == "registry") registered[s] = 1
      if (!(s in def)) continue
      b = def[s]
      if (b == a || ((a, b) in ok)) continue
      if (!((a, b, s) in seen)) {
        printf "%s/%s calls %s of area %s, which %s may not depend on\n", a, f, s, b, a
        seen[a, b, s] = 1
      }
      bad = 1
    }
    for (s in ops)
      if (!(s in registered)) {
        printf "layer ops table %s (%s) is not registered in lib/registry/layer_kinds.c\n", s, ops[s]
        bad = 1
      }
    exit bad
  }' "$syms"
