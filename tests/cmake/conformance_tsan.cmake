# ThreadSanitizer build of the conformance suite's `threads` case
# (tests/test_internal_conformance.c): two threads run inference on one
# layer of every kind at once, and TSan reports any write into the layer
# (its impl included) that the byte comparisons of the plain run cannot see.
# The whole library is compiled here with -fsanitize=thread (every kind is
# reached through the registry).  TSan cannot be combined with ASan, and one
# instrumented build per CI run is enough: only in gcc builds without
# EFFML_SANITIZE.
if(NOT EFFML_SANITIZE AND CMAKE_C_COMPILER_ID STREQUAL "GNU")
  get_target_property(_conf_lib effml_objects SOURCES)
  add_executable(conformance_threads_tsan
                 ${CMAKE_CURRENT_SOURCE_DIR}/test_internal_conformance.c
                 ${CMAKE_CURRENT_SOURCE_DIR}/testutil.c ${_conf_lib})
  target_include_directories(conformance_threads_tsan PRIVATE
    ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR}/lib/core ${CMAKE_CURRENT_SOURCE_DIR}
    ${LAPACKE_INCLUDE_DIR} ${OPENBLAS_INCLUDE_DIRS} ${CJSON_INCLUDE_DIRS})
  target_compile_definitions(conformance_threads_tsan PRIVATE
    _POSIX_C_SOURCE=200809L _DEFAULT_SOURCE
    EFFML_TEST_DATA="${EFFML_TEST_DATA}" EFFML_TEST_REF="${EFFML_TEST_REF}"
    EFFML_TEST_TMP="${CMAKE_CURRENT_BINARY_DIR}")
  target_compile_options(conformance_threads_tsan PRIVATE -fsanitize=thread -O1 -g)
  target_link_options(conformance_threads_tsan PRIVATE -fsanitize=thread)
  target_link_libraries(conformance_threads_tsan PRIVATE PkgConfig::CHECK ${LAPACKE_LIB}
                        ${OPENBLAS_LINK_LIBRARIES} ${CJSON_LINK_LIBRARIES} ${ZLIB_LIBRARIES}
                        Threads::Threads m)
  add_test(NAME conformance_threads_tsan COMMAND conformance_threads_tsan)
  set_tests_properties(conformance_threads_tsan PROPERTIES
    ENVIRONMENT "CK_FORK=no;CK_RUN_CASE=threads;OPENBLAS_NUM_THREADS=1;TSAN_OPTIONS=halt_on_error=1:exitcode=66"
    TIMEOUT 300)
endif()
