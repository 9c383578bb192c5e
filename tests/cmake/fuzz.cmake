# Replay the committed fuzz corpora (tests/fuzz/corpus/<target>) through the
# fuzz targets with a plain main() (tests/fuzz/replay.c), on every CTest run.
# The libFuzzer builds themselves come from tests/fuzz/build.sh.
foreach(_fuzz npy safetensors idx idx_gz peft_config layer_load)
  set(_src ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_${_fuzz}.c)
  if(_fuzz STREQUAL "idx_gz")
    set(_src ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_idx.c)
  endif()
  add_executable(fuzz_replay_${_fuzz} ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/replay.c ${_src})
  target_link_libraries(fuzz_replay_${_fuzz} PRIVATE effml_static)
  if(_fuzz STREQUAL "idx_gz")
    target_compile_definitions(fuzz_replay_${_fuzz} PRIVATE FUZZ_IDX_GZ)
  endif()
  if(_fuzz MATCHES "^idx")
    target_link_libraries(fuzz_replay_${_fuzz} PRIVATE ZLIB::ZLIB)
  endif()
  target_compile_definitions(fuzz_replay_${_fuzz} PRIVATE _POSIX_C_SOURCE=200809L)
  add_test(NAME fuzz_replay_${_fuzz}
           COMMAND fuzz_replay_${_fuzz} ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus/${_fuzz})
endforeach()
