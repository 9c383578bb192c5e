# ThreadSanitizer build of tests/test_cascade_threads.c (one built
# cascade is run from several threads at once, each with its own workspace).
# TSan cannot be combined with ASan, so this target exists only in builds
# without EFFML_SANITIZE.  It compiles the library sources the cascade needs
# (core, tensor, cascade, calibration) directly with -fsanitize=thread, so the library's
# own threads (effml__parallel_for) are instrumented too.
if(NOT EFFML_SANITIZE AND CMAKE_C_COMPILER_ID MATCHES "GNU|Clang")
  file(GLOB _cascade_tsan_lib CONFIGURE_DEPENDS
       ${PROJECT_SOURCE_DIR}/lib/core/*.c
       ${PROJECT_SOURCE_DIR}/lib/tensor/*.c
       ${PROJECT_SOURCE_DIR}/lib/cascade/*.c
       ${PROJECT_SOURCE_DIR}/lib/calibration/*.c)
  add_executable(test_cascade_threads_tsan
                 ${CMAKE_CURRENT_SOURCE_DIR}/test_cascade_threads.c
                 ${CMAKE_CURRENT_SOURCE_DIR}/testutil.c ${_cascade_tsan_lib})
  target_include_directories(test_cascade_threads_tsan PRIVATE
    ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR}/lib/core ${CMAKE_CURRENT_SOURCE_DIR})
  target_compile_definitions(test_cascade_threads_tsan PRIVATE
    _POSIX_C_SOURCE=200809L _DEFAULT_SOURCE
    EFFML_TEST_DATA="${EFFML_TEST_DATA}" EFFML_TEST_REF="${EFFML_TEST_REF}"
    EFFML_TEST_TMP="${CMAKE_CURRENT_BINARY_DIR}")
  target_compile_options(test_cascade_threads_tsan PRIVATE -fsanitize=thread -O1 -g)
  target_link_options(test_cascade_threads_tsan PRIVATE -fsanitize=thread)
  target_link_libraries(test_cascade_threads_tsan PRIVATE PkgConfig::CHECK Threads::Threads m)
  add_test(NAME test_cascade_threads_tsan COMMAND test_cascade_threads_tsan)
  set_tests_properties(test_cascade_threads_tsan PROPERTIES
    ENVIRONMENT "CK_FORK=no;TSAN_OPTIONS=halt_on_error=1:exitcode=66" TIMEOUT 300)
endif()
