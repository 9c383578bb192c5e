# Quality gates (area `quality`), included by tests/CMakeLists.txt:
#   header_c, header_cxx   the umbrella header (and each area header) compiles
#                          alone, -pedantic -Werror, as C11 and as C++11
#   symbols                .so exports == lib/libeffml.map == EFFML_API declarations,
#                          all effml_-prefixed
#   abi                    abidiff --no-added-syms against abi/libeffml.abi
#   install_consumer_pkgconfig / install_consumer_cmake
#                          install into a temporary prefix, build and run
#                          consumers with pkg-config and with find_package(effml)
#   shellcheck             scripts/*.sh, .ci/run and the test drivers
# All carry the label `quality`: ctest -L quality.  A test exits 77 (skipped)
# when the tool it needs (C++ compiler, abidiff) is absent.
find_program(EFFML_BASH bash REQUIRED)
set(_q_src ${CMAKE_CURRENT_SOURCE_DIR})

add_test(NAME header_c
  COMMAND ${EFFML_BASH} ${_q_src}/headertest/run.sh c ${CMAKE_C_COMPILER}
          ${PROJECT_SOURCE_DIR}/include ${_q_src}/headertest)

# The project is C only; find a C++ compiler just to run it on the header.
include(CheckLanguage)
check_language(CXX)
if(CMAKE_CXX_COMPILER)
  add_test(NAME header_cxx
    COMMAND ${EFFML_BASH} ${_q_src}/headertest/run.sh cxx ${CMAKE_CXX_COMPILER}
            ${PROJECT_SOURCE_DIR}/include ${_q_src}/headertest)
else()
  add_test(NAME header_cxx COMMAND ${EFFML_BASH} -c "echo 'no C++ compiler found: skipped'; exit 77")
endif()

add_test(NAME symbols
  COMMAND ${EFFML_BASH} ${_q_src}/symbols/check_symbols.sh $<TARGET_FILE:effml>
          ${PROJECT_SOURCE_DIR}/lib/libeffml.map ${PROJECT_SOURCE_DIR}/include
          ${CMAKE_C_COMPILER} ${CMAKE_NM})

find_program(EFFML_PERL perl)
if(EFFML_PERL)
  add_test(NAME errors_name_the_call
    COMMAND ${EFFML_PERL} ${_q_src}/symbols/check_enter.pl ${PROJECT_SOURCE_DIR}/lib/libeffml.map
            ${PROJECT_SOURCE_DIR}/lib)
  add_test(NAME errors_name_the_call_selftest
    COMMAND ${EFFML_BASH} ${_q_src}/symbols/check_enter_selftest.sh ${EFFML_PERL} ${_q_src}/symbols)
else()
  add_test(NAME errors_name_the_call COMMAND ${EFFML_BASH} -c "echo 'perl not found: skipped'; exit 77")
  add_test(NAME errors_name_the_call_selftest COMMAND ${EFFML_BASH} -c "echo 'perl not found: skipped'; exit 77")
endif()

add_test(NAME abi
  COMMAND ${EFFML_BASH} ${PROJECT_SOURCE_DIR}/scripts/abi-check.sh $<TARGET_FILE:effml>
          ${PROJECT_SOURCE_DIR}/abi/libeffml.abi ${PROJECT_SOURCE_DIR}/include)

# Consumers of a sanitized build must link the sanitizer runtime too.
string(REPLACE ";" " " _q_extra "${EFFML_SANITIZE_FLAGS}")
foreach(_q_mode pkgconfig cmake)
  add_test(NAME install_consumer_${_q_mode}
    COMMAND ${EFFML_BASH} ${_q_src}/install/run.sh ${_q_mode} ${PROJECT_BINARY_DIR}
            ${PROJECT_SOURCE_DIR} ${CMAKE_CURRENT_BINARY_DIR}/install-${_q_mode}
            ${CMAKE_C_COMPILER} ${CMAKE_COMMAND} "${_q_extra}")
  set_tests_properties(install_consumer_${_q_mode} PROPERTIES TIMEOUT 900)
endforeach()

# The shell scripts of the build machinery stay shellcheck-clean.
find_program(EFFML_SHELLCHECK shellcheck)
file(GLOB _q_scripts ${PROJECT_SOURCE_DIR}/scripts/*.sh ${_q_src}/headertest/*.sh
     ${_q_src}/symbols/*.sh ${_q_src}/install/*.sh)
if(EFFML_SHELLCHECK)
  add_test(NAME shellcheck
    COMMAND ${EFFML_SHELLCHECK} -x ${_q_scripts} ${PROJECT_SOURCE_DIR}/.ci/run
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
else()
  add_test(NAME shellcheck COMMAND ${EFFML_BASH} -c "echo 'shellcheck not found: skipped'; exit 77")
endif()

set(_q_tests header_c header_cxx symbols errors_name_the_call errors_name_the_call_selftest abi install_consumer_pkgconfig install_consumer_cmake
    shellcheck)
set_tests_properties(${_q_tests} PROPERTIES LABELS quality SKIP_RETURN_CODE 77)
foreach(_q_t test_core test_alloc)
  if(TEST ${_q_t})
    set_tests_properties(${_q_t} PROPERTIES LABELS quality)
  endif()
endforeach()
