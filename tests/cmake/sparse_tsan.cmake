# ThreadSanitizer build of the `threads` case of tests/test_internal_sparse.c:
# the sparse kernels hand work out to their threads from shared counters,
# and the block forward packs Xᵀ and computes from it in one parallel call
# (compute items wait for the pack items through an atomic counter).  The
# byte comparisons of the plain run show a missing or doubled item; TSan
# shows an unsynchronised read of a pack another thread is still writing.
# The library sources of the areas sparse may call (tests/deps/allowed.txt,
# closed transitively) are compiled here with -fsanitize=thread.  TSan cannot
# be combined with ASan: only in builds without EFFML_SANITIZE.
if(NOT EFFML_SANITIZE AND CMAKE_C_COMPILER_ID MATCHES "GNU|Clang")
  file(STRINGS ${CMAKE_CURRENT_SOURCE_DIR}/deps/allowed.txt _sparse_tsan_table
       REGEX "^[a-z_]+:")
  set(_sparse_tsan_todo sparse)
  set(_sparse_tsan_areas)
  while(_sparse_tsan_todo)
    list(POP_FRONT _sparse_tsan_todo _sparse_tsan_a)
    if(_sparse_tsan_a IN_LIST _sparse_tsan_areas)
      continue()
    endif()
    list(APPEND _sparse_tsan_areas ${_sparse_tsan_a})
    foreach(_sparse_tsan_line IN LISTS _sparse_tsan_table)
      if(_sparse_tsan_line MATCHES "^${_sparse_tsan_a}:(.*)$")
        string(REGEX MATCHALL "[a-z_]+" _sparse_tsan_deps "${CMAKE_MATCH_1}")
        list(APPEND _sparse_tsan_todo ${_sparse_tsan_deps})
      endif()
    endforeach()
  endwhile()
  set(_sparse_tsan_globs)
  foreach(_sparse_tsan_a IN LISTS _sparse_tsan_areas)
    list(APPEND _sparse_tsan_globs ${PROJECT_SOURCE_DIR}/lib/${_sparse_tsan_a}/*.c)
  endforeach()
  file(GLOB _sparse_tsan_lib CONFIGURE_DEPENDS ${_sparse_tsan_globs})
  add_executable(internal_sparse_tsan
                 ${CMAKE_CURRENT_SOURCE_DIR}/test_internal_sparse.c
                 ${CMAKE_CURRENT_SOURCE_DIR}/testutil.c ${_sparse_tsan_lib})
  target_include_directories(internal_sparse_tsan PRIVATE
    ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR}/lib/core ${CMAKE_CURRENT_SOURCE_DIR}
    ${LAPACKE_INCLUDE_DIR} ${OPENBLAS_INCLUDE_DIRS} ${CJSON_INCLUDE_DIRS})
  target_compile_definitions(internal_sparse_tsan PRIVATE
    _POSIX_C_SOURCE=200809L _DEFAULT_SOURCE EFFML_TEST_TSAN=1
    EFFML_TEST_DATA="${EFFML_TEST_DATA}" EFFML_TEST_REF="${EFFML_TEST_REF}"
    EFFML_TEST_TMP="${CMAKE_CURRENT_BINARY_DIR}")
  target_compile_options(internal_sparse_tsan PRIVATE -fsanitize=thread -O1 -g)
  # the block kernels are written with vector extensions and rely on FMA
  # contraction, as in lib/CMakeLists.txt
  set_source_files_properties(${PROJECT_SOURCE_DIR}/lib/sparse/bspmm.c TARGET_DIRECTORY
    internal_sparse_tsan PROPERTIES COMPILE_OPTIONS -ffp-contract=fast)
  target_link_options(internal_sparse_tsan PRIVATE -fsanitize=thread)
  target_link_libraries(internal_sparse_tsan PRIVATE PkgConfig::CHECK ${LAPACKE_LIB}
                        ${OPENBLAS_LINK_LIBRARIES} ${CJSON_LINK_LIBRARIES} ${ZLIB_LIBRARIES}
                        Threads::Threads m)
  add_test(NAME internal_sparse_tsan COMMAND internal_sparse_tsan)
  set_tests_properties(internal_sparse_tsan PROPERTIES
    ENVIRONMENT "CK_FORK=no;CK_RUN_CASE=threads;OPENBLAS_NUM_THREADS=1;TSAN_OPTIONS=halt_on_error=1:exitcode=66"
    TIMEOUT 300)
endif()
