# Replay the committed fuzz seed corpora (tests/fuzz/corpus/{npy,safetensors})
# through the fuzz targets with a plain main() (tests/fuzz/replay.c), on every
# CTest run.  The libFuzzer builds themselves come from tests/fuzz/build.sh.
foreach(_fuzz npy safetensors)
  add_executable(fuzz_replay_${_fuzz} ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/replay.c
                 ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_${_fuzz}.c)
  target_link_libraries(fuzz_replay_${_fuzz} PRIVATE effml_static)
  add_test(NAME fuzz_replay_${_fuzz}
           COMMAND fuzz_replay_${_fuzz} ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus/${_fuzz})
endforeach()
