#!/bin/bash
# Selftest of check_enter.pl (CTest errors_name_the_call_selftest): on the
# fixture in enter_selftest/ it must fail, flag exactly the three
# effml_sel_bad_* definitions (one-line, multi-line with ENTER only in a
# comment, ENTER on the wrong argument) and report effml_sel_missing.
#   check_enter_selftest.sh <perl> <tests/symbols dir>
perl="$1"; dir="$2"
out=$("$perl" "$dir/check_enter.pl" "$dir/enter_selftest/libeffml.map" "$dir/enter_selftest/lib" 2>&1)
rc=$?
echo "$out"
fail=0
[ "$rc" -ne 0 ] || { echo "FAIL: check_enter.pl passed the fixture"; fail=1; }
for f in effml_sel_bad_one_line effml_sel_bad_after_one_liner effml_sel_bad_other_name effml_sel_missing; do
  grep -q "\b$f\$" <<<"$out" || { echo "FAIL: $f not reported"; fail=1; }
done
for f in effml_sel_good_multi_line effml_sel_good_one_line effml_sel_const_ctx; do
  grep -q "\b$f\$" <<<"$out" && { echo "FAIL: $f wrongly reported"; fail=1; }
done
[ $fail -eq 0 ] && echo "ok: check_enter.pl flags the fixture's bad definitions and only those"
exit $fail
