# python_layout: python/tests/test_layout.py in CTest, so that a C option struct
# that grows (or reorders) without its ctypes mirror in python/effml fails the
# plain suite, not only scripts/test.sh's pytest step.  It runs the package from
# the source tree (PYTHONPATH=python) against the library just built
# (EFFML_LIBRARY), so neither can be a stale copy; the offsets test compiles the
# headers in include/ with the C compiler of this build.  Skipped (exit 77, with
# the reason) when the Python interpreter lacks numpy or pytest, and in
# sanitizer builds (an instrumented libeffml cannot be loaded into an
# uninstrumented python3 without preloading the runtime).
# EFFML_PYTHON: the interpreter; default /usr/bin/python3 when it exists (the
# python3 first on PATH may be another one without numpy), else python3 on PATH.
find_program(EFFML_BASH bash REQUIRED)
if(NOT DEFINED EFFML_PYTHON)
  if(EXISTS /usr/bin/python3)
    set(EFFML_PYTHON /usr/bin/python3 CACHE FILEPATH "Python for the python_layout test")
  else()
    find_program(EFFML_PYTHON NAMES python3)
  endif()
endif()
if(EFFML_SANITIZE)
  add_test(NAME python_layout
    COMMAND ${EFFML_BASH} -c "echo 'sanitizer build: python_layout skipped'; exit 77")
elseif(NOT EFFML_PYTHON)
  add_test(NAME python_layout
    COMMAND ${EFFML_BASH} -c "echo 'no python3 found: python_layout skipped'; exit 77")
else()
  add_test(NAME python_layout
    COMMAND ${EFFML_BASH} -c
      "\"$0\" -c 'import numpy, pytest' 2>/dev/null || { echo \"$0 has no numpy or pytest: python_layout skipped\"; exit 77; }; exec \"$0\" -m pytest -q -p no:cacheprovider \"$1\""
      ${EFFML_PYTHON} ${PROJECT_SOURCE_DIR}/python/tests/test_layout.py
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(python_layout PROPERTIES
    ENVIRONMENT "PYTHONPATH=${PROJECT_SOURCE_DIR}/python;EFFML_LIBRARY=$<TARGET_FILE:effml>;PYTHONDONTWRITEBYTECODE=1")
endif()
set_tests_properties(python_layout PROPERTIES LABELS quality SKIP_RETURN_CODE 77 TIMEOUT 300)
