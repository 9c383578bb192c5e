#!/usr/bin/env bash
# Install-tree consumer test (CTest install_consumer_pkgconfig / _cmake).
#   run.sh pkgconfig|cmake <build dir> <source dir> <work dir> <C compiler> <cmake> [extra C flags]
# Installs the build into <work dir>/prefix, then builds tests/install/consumer.c
# against the installed tree only -- with `pkg-config --cflags --libs effml`
# (shared, and static with `pkg-config --static`), or with find_package(effml)
# (shared and static targets, plus every examples/*.c through
# examples/CMakeLists.txt) -- and runs the consumers.  Extra C flags carry the
# sanitizer flags of a sanitized build so the consumers link its runtime.
set -euo pipefail

mode=$1 build=$2 src=$3 work=$4 cc=$5 cmake=$6 extra=${7:-}
read -r -a xflags <<<"$extra"

rm -rf "$work"
mkdir -p "$work"
"$cmake" --install "$build" --prefix "$work/prefix" >"$work/install.log"
pc=$(find "$work/prefix" -name effml.pc -path '*/pkgconfig/*' | head -n 1)
if [ -z "$pc" ]; then
  echo "FAIL: no effml.pc installed under $work/prefix" >&2
  exit 1
fi
pcdir=$(dirname "$pc")
libdir=$(dirname "$pcdir") # lib or lib/<multiarch>
echo "installed: $pc (libdir $libdir)"

# The installed tool runs from this non-default prefix with no LD_LIBRARY_PATH: its RUNPATH is
# $ORIGIN/../<libdir> and resolves to the libeffml.so.0 installed next to it.
tool=$work/prefix/bin/effml-adapter
[ -x "$tool" ] || { echo "FAIL: bin/effml-adapter was not installed under $work/prefix" >&2; exit 1; }
want_rp="\$ORIGIN/../${libdir#"$work/prefix/"}"
rp=$(readelf -d "$tool" | sed -nE 's/.*\((RUNPATH|RPATH)\).*\[(.*)\].*/\2/p')
if [ "$rp" != "$want_rp" ]; then
  echo "FAIL: installed effml-adapter has RUNPATH '$rp', want '$want_rp'" >&2
  exit 1
fi
got=$(env -u LD_LIBRARY_PATH ldd "$tool" | awk '$1 == "libeffml.so.0" { print $3 }')
if [ -z "$got" ] || [ "$(readlink -f "$got")" != "$(readlink -f "$libdir/libeffml.so.0")" ]; then
  echo "FAIL: installed effml-adapter does not resolve libeffml.so.0 to $libdir:" >&2
  env -u LD_LIBRARY_PATH ldd "$tool" >&2
  exit 1
fi
if ! env -u LD_LIBRARY_PATH "$tool" info "$src/tests/data/peft/lora" >"$work/tool.out" 2>&1 ||
  ! grep -q '^type: LORA' "$work/tool.out"; then
  echo "FAIL: installed effml-adapter info did not run:" >&2
  cat "$work/tool.out" >&2
  exit 1
fi
echo "installed effml-adapter: RUNPATH $rp, runs without LD_LIBRARY_PATH"

case $mode in
  pkgconfig)
    export PKG_CONFIG_PATH=$pcdir
    echo "pkg-config effml $(pkg-config --modversion effml): $(pkg-config --cflags --libs effml)"
    read -r -a pcflags <<<"$(pkg-config --cflags --libs effml)"
    "$cc" -std=c11 -Wall -Wextra -Werror "${xflags[@]}" "$src/tests/install/consumer.c" \
      -o "$work/consumer" "${pcflags[@]}" "-Wl,-rpath,$libdir"
    "$work/consumer"
    # Static: the same flags with --static must pull every private dependency.
    read -r -a stflags <<<"$(pkg-config --static --cflags --libs effml)"
    for i in "${!stflags[@]}"; do
      [ "${stflags[$i]}" = "-leffml" ] && stflags[i]=$libdir/libeffml.a
    done
    "$cc" -std=c11 "${xflags[@]}" "$src/tests/install/consumer.c" -o "$work/consumer_static" \
      "${stflags[@]}"
    if ldd "$work/consumer_static" | grep -q libeffml; then
      echo "FAIL: consumer_static is linked against the shared libeffml" >&2
      exit 1
    fi
    "$work/consumer_static"
    ;;
  cmake)
    cfg=(-DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=Release
         -DCMAKE_C_FLAGS="$extra")
    "$cmake" -S "$src/tests/install" -B "$work/consumer" "${cfg[@]}" >"$work/consumer.log"
    "$cmake" --build "$work/consumer" >>"$work/consumer.log"
    "$work/consumer/consumer"
    "$work/consumer/consumer_static"
    # The examples are written to be built exactly this way by users.
    "$cmake" -S "$src/examples" -B "$work/examples" "${cfg[@]}" >"$work/examples.log"
    if ! "$cmake" --build "$work/examples" -j 2 >>"$work/examples.log" 2>&1; then
      cat "$work/examples.log" >&2
      echo "FAIL: examples/ do not build against the installed package" >&2
      exit 1
    fi
    echo "examples built: $(find "$work/examples" -maxdepth 1 -type f -perm -u+x | wc -l)"
    # Every example behaves like a command-line program (examples/example_args.h):
    # --help prints usage on stdout and exits 0, an unknown option or a missing value
    # prints usage on stderr and exits 2, and neither writes into the working directory.
    cwd=$work/examples-cwd
    rm -rf "$cwd" && mkdir -p "$cwd"
    n_ex=0
    for src_c in "$src"/examples/*.c; do
      ex=$work/examples/$(basename "$src_c" .c)
      [ -x "$ex" ] || { echo "FAIL: example $ex was not built" >&2; exit 1; }
      n_ex=$((n_ex + 1))
      set +e
      (cd "$cwd" && "$ex" --help >"$work/ex.out" 2>"$work/ex.err"); rc=$?
      set -e
      if [ "$rc" -ne 0 ] || ! grep -q '^usage:' "$work/ex.out"; then
        echo "FAIL: $ex --help exited $rc (want 0 and usage on stdout)" >&2; exit 1
      fi
      for bad in --no-such-option --seed; do  # unknown option; option without its value
        set +e
        (cd "$cwd" && "$ex" $bad >"$work/ex.out" 2>"$work/ex.err"); rc=$?
        set -e
        if [ "$rc" -ne 2 ] || ! grep -q '^usage:' "$work/ex.err"; then
          echo "FAIL: $ex $bad exited $rc (want 2 and usage on stderr)" >&2; exit 1
        fi
      done
      set +e
      (cd "$cwd" && "$ex" --seed x >/dev/null 2>&1); rc=$?
      set -e
      [ "$rc" -eq 2 ] || { echo "FAIL: $ex --seed x exited $rc (want 2)" >&2; exit 1; }
    done
    if [ -n "$(ls -A "$cwd")" ]; then
      echo "FAIL: examples wrote into the working directory: $(ls -A "$cwd")" >&2; exit 1
    fi
    echo "examples: --help, bad options and the working directory checked for $n_ex programs"
    ;;
  *)
    echo "usage: $0 pkgconfig|cmake BUILD SRC WORK CC CMAKE [FLAGS]" >&2
    exit 2
    ;;
esac
echo "install consumer ($mode): OK"
