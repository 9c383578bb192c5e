#!/usr/bin/env bash
# Header test driver (CTest header_c / header_cxx).
#   run.sh c   <cc>  <include dir> <test dir>
#   run.sh cxx <cxx> <include dir> <test dir>
# Compiles the umbrella header alone (headertest.c / headertest.cpp), then
# every include/effml/*.h alone as the first line of a translation unit, with
# warnings as errors.  Only syntax is checked: nothing is linked.
set -euo pipefail

lang=$1 compiler=$2 incdir=$3 testdir=$4
case $lang in
  c) flags=(-x c -std=c11) main=$testdir/headertest.c ;;
  cxx) flags=(-x c++ -std=c++11) main=$testdir/headertest.cpp ;;
  *) echo "usage: $0 c|cxx COMPILER INCLUDE_DIR TEST_DIR" >&2; exit 2 ;;
esac
flags+=(-Wall -Wextra -pedantic -Werror -fsyntax-only -I "$incdir")

echo "$compiler ${flags[*]} $main"
"$compiler" "${flags[@]}" "$main"
# ... and with the experimental tier visible (EFFML_EXPERIMENTAL).
echo "$compiler ${flags[*]} -DEFFML_EXPERIMENTAL $main"
"$compiler" "${flags[@]}" -DEFFML_EXPERIMENTAL "$main"

# The umbrella must include every per-area header, and each must stand alone.
status=0
for h in "$incdir"/effml/*.h; do
  name=effml/$(basename "$h")
  if ! grep -q "#include \"$name\"" "$incdir/effml.h"; then
    echo "FAIL: $incdir/effml.h does not include $name" >&2
    status=1
  fi
  if ! printf '#include <%s>\n' "$name" | "$compiler" "${flags[@]}" -; then
    echo "FAIL: $name does not compile alone ($lang)" >&2
    status=1
  fi
done
[ "$status" -eq 0 ] && echo "header test ($lang): OK"
exit "$status"
