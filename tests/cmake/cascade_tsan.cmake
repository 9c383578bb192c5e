# ThreadSanitizer build of tests/test_cascade_threads.c (one built
# cascade is run from several threads at once, each with its own workspace).
# TSan cannot be combined with ASan, so this target exists only in builds
# without EFFML_SANITIZE.  It compiles the library sources the cascade needs
# directly with -fsanitize=thread, so the library's own threads
# (effml__parallel_for) are instrumented too.  Which folders those are is
# derived from the dependency table tests/deps/allowed.txt (the areas cascade
# may call, closed transitively; CTest layer_deps checks the table against the
# real symbol references), so a new dependency of the cascade is picked up
# here without editing this file.
if(NOT EFFML_SANITIZE AND CMAKE_C_COMPILER_ID MATCHES "GNU|Clang")
  file(STRINGS ${CMAKE_CURRENT_SOURCE_DIR}/deps/allowed.txt _cascade_tsan_table
       REGEX "^[a-z_]+:")
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
               ${CMAKE_CURRENT_SOURCE_DIR}/deps/allowed.txt)
  set(_cascade_tsan_todo cascade)
  set(_cascade_tsan_areas)
  while(_cascade_tsan_todo)
    list(POP_FRONT _cascade_tsan_todo _cascade_tsan_a)
    if(_cascade_tsan_a IN_LIST _cascade_tsan_areas)
      continue()
    endif()
    if(NOT IS_DIRECTORY ${PROJECT_SOURCE_DIR}/lib/${_cascade_tsan_a})
      message(FATAL_ERROR "tests/deps/allowed.txt names area '${_cascade_tsan_a}' "
                          "but lib/${_cascade_tsan_a} does not exist")
    endif()
    list(APPEND _cascade_tsan_areas ${_cascade_tsan_a})
    foreach(_cascade_tsan_line IN LISTS _cascade_tsan_table)
      if(_cascade_tsan_line MATCHES "^${_cascade_tsan_a}:(.*)$")
        string(REGEX MATCHALL "[a-z_]+" _cascade_tsan_deps "${CMAKE_MATCH_1}")
        list(APPEND _cascade_tsan_todo ${_cascade_tsan_deps})
      endif()
    endforeach()
  endwhile()
  set(_cascade_tsan_globs)
  foreach(_cascade_tsan_a IN LISTS _cascade_tsan_areas)
    list(APPEND _cascade_tsan_globs ${PROJECT_SOURCE_DIR}/lib/${_cascade_tsan_a}/*.c)
  endforeach()
  file(GLOB _cascade_tsan_lib CONFIGURE_DEPENDS ${_cascade_tsan_globs})
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
