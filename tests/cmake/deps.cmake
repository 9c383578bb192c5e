# The layer check (docs/architecture.md): `nm` over every object of the
# library against tests/deps/allowed.txt; fails when an area calls a higher
# one, or when a layer ops table is not registered.  layer_deps_selftest runs
# the same check with a table that forbids a call the library makes (layer ->
# io, the save/load of parameters) and passes only when the check names that
# call.
find_program(EFFML_BASH bash REQUIRED)
find_program(EFFML_NM NAMES ${CMAKE_NM} nm)
if(EFFML_NM)
  add_test(NAME layer_deps
    COMMAND ${EFFML_BASH} ${CMAKE_CURRENT_SOURCE_DIR}/deps/check_deps.sh
            ${CMAKE_CURRENT_SOURCE_DIR}/deps/allowed.txt ${EFFML_NM}
            $<TARGET_OBJECTS:effml_objects>
    COMMAND_EXPAND_LISTS)
  add_test(NAME layer_deps_selftest
    COMMAND ${EFFML_BASH} ${CMAKE_CURRENT_SOURCE_DIR}/deps/check_deps.sh
            ${CMAKE_CURRENT_SOURCE_DIR}/deps/allowed_without_io.txt ${EFFML_NM}
            $<TARGET_OBJECTS:effml_objects>
    COMMAND_EXPAND_LISTS)
  set_tests_properties(layer_deps_selftest PROPERTIES
    PASS_REGULAR_EXPRESSION "layer/layer\\.c\\.o calls effml_[a-z_]+ of area io, which layer may not depend on")
  set_tests_properties(layer_deps layer_deps_selftest PROPERTIES LABELS quality)
endif()
