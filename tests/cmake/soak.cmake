# Randomized API soak (tests/soak.c): a short seeded run on every CTest run.
# Long runs: build with -DEFFML_SANITIZE=address,undefined and run
#   build-asan/tests/soak --seed N --seconds 600
add_executable(soak ${CMAKE_CURRENT_SOURCE_DIR}/soak.c)
target_link_libraries(soak PRIVATE effml_static)
target_compile_definitions(soak PRIVATE _POSIX_C_SOURCE=200809L)
set(_soak_dir ${CMAKE_CURRENT_BINARY_DIR}/soak_tmp)
file(MAKE_DIRECTORY ${_soak_dir})
add_test(NAME soak_short COMMAND soak --seed 20261204 --iterations 400 --dir ${_soak_dir})
set_tests_properties(soak_short PROPERTIES TIMEOUT 300)
