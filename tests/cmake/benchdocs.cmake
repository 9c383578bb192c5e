# bench_docs: the benchmark tables in README.md and docs/*.md are what
# scripts/bench-docs.py renders from the committed bench/results/*.jsonl
# (area `perf`; label `quality`).  Skipped (77) without a Python 3 interpreter.
find_program(EFFML_PYTHON3 NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
if(NOT EFFML_PYTHON3)
  find_program(EFFML_PYTHON3 python3)
endif()
if(EFFML_PYTHON3)
  add_test(NAME bench_docs COMMAND ${EFFML_PYTHON3} ${PROJECT_SOURCE_DIR}/scripts/bench-docs.py --check)
else()
  find_program(_bd_bash bash REQUIRED)
  add_test(NAME bench_docs COMMAND ${_bd_bash} -c "echo no python3: skipped; exit 77")
endif()
set_tests_properties(bench_docs PROPERTIES LABELS quality SKIP_RETURN_CODE 77)
