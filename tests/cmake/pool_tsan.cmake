# ThreadSanitizer build of the core cases of tests/test_internal_pool.c: the
# context's worker pool (effml_context_set_thread_pool) publishes each region
# through an atomic ticket and collects it through an atomic counter and a
# condition variable; many short regions at 2-4 threads and spin times 0 /
# 50 us / default, nested regions and changes of num_threads with live
# workers.  Only lib/core and lib/tensor are compiled here with
# -fsanitize=thread (the cases that run kernels of other areas are left to
# the plain and ASan builds; EFFML_TEST_POOL_CORE_ONLY).  TSan cannot be
# combined with ASan: only in builds without EFFML_SANITIZE.
if(NOT EFFML_SANITIZE AND CMAKE_C_COMPILER_ID MATCHES "GNU|Clang")
  file(GLOB _pool_tsan_lib CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/lib/core/*.c
       ${PROJECT_SOURCE_DIR}/lib/tensor/*.c)
  add_executable(internal_pool_tsan
                 ${CMAKE_CURRENT_SOURCE_DIR}/test_internal_pool.c
                 ${CMAKE_CURRENT_SOURCE_DIR}/testutil.c ${_pool_tsan_lib})
  target_include_directories(internal_pool_tsan PRIVATE
    ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR}/lib/core ${CMAKE_CURRENT_SOURCE_DIR}
    ${OPENBLAS_INCLUDE_DIRS})
  target_compile_definitions(internal_pool_tsan PRIVATE
    _POSIX_C_SOURCE=200809L _DEFAULT_SOURCE EFFML_TEST_POOL_CORE_ONLY=1
    EFFML_TEST_DATA="${EFFML_TEST_DATA}" EFFML_TEST_REF="${EFFML_TEST_REF}"
    EFFML_TEST_TMP="${CMAKE_CURRENT_BINARY_DIR}")
  target_compile_options(internal_pool_tsan PRIVATE -fsanitize=thread -O1 -g)
  target_link_options(internal_pool_tsan PRIVATE -fsanitize=thread)
  target_link_libraries(internal_pool_tsan PRIVATE PkgConfig::CHECK ${OPENBLAS_LINK_LIBRARIES}
                        Threads::Threads m)
  add_test(NAME internal_pool_tsan COMMAND internal_pool_tsan)
  set_tests_properties(internal_pool_tsan PROPERTIES
    ENVIRONMENT "CK_FORK=no;TSAN_OPTIONS=halt_on_error=1:exitcode=66" TIMEOUT 600)
endif()
