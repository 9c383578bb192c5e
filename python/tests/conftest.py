"""pytest setup: import effml from this checkout (python/), the library from EFFML_LIBRARY.

scripts/test.sh sets EFFML_LIBRARY=build/lib/libeffml.so.0; when it is unset
and build/lib/libeffml.so.0 exists it is used, so `pytest python/tests` works
right after a build.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))

if not os.environ.get("EFFML_LIBRARY"):
    cand = os.path.join(ROOT, "build", "lib", "libeffml.so.0")
    if os.path.exists(cand):
        os.environ["EFFML_LIBRARY"] = cand
