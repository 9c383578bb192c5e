# The main job's --quick run: build examples/pipeline_fashion_mnist.c
# in-tree, run it on Fashion-MNIST (dataset-fashion-mnist), then check the
# structure and sanity of its results.json with check_pipeline_results.
set(EFFML_FMNIST_DIR /usr/share/datasets/fashion-mnist CACHE PATH "Fashion-MNIST IDX directory")

add_executable(pipeline_fashion_mnist_intree ${PROJECT_SOURCE_DIR}/examples/pipeline_fashion_mnist.c)
target_link_libraries(pipeline_fashion_mnist_intree PRIVATE effml m)
target_compile_definitions(pipeline_fashion_mnist_intree PRIVATE _POSIX_C_SOURCE=200809L)

add_executable(check_pipeline_results ${CMAKE_CURRENT_SOURCE_DIR}/check_pipeline_results.c)
target_include_directories(check_pipeline_results PRIVATE ${CJSON_INCLUDE_DIRS})
target_link_libraries(check_pipeline_results PRIVATE ${CJSON_LINK_LIBRARIES})

# Run it as a user would, from an empty working directory and without --out: the
# results must land in the documented default folder ${TMPDIR}/effml-examples and the
# working directory must stay empty (check_pipeline_results' third argument).
set(_pq_tmp ${CMAKE_CURRENT_BINARY_DIR}/pipeline_quick_tmp)
set(_pq_out ${_pq_tmp}/effml-examples)
set(_pq_cwd ${CMAKE_CURRENT_BINARY_DIR}/pipeline_quick_cwd)
add_test(NAME pipeline_quick
  COMMAND sh -c "rm -rf \"$1\" \"$2\" && mkdir -p \"$1\" \"$2\" && cd \"$1\" && \
exec env -u EFFML_EXAMPLES_OUT TMPDIR=\"$2\" OPENBLAS_NUM_THREADS=2 \"$3\" --quick \
--data \"$4\" --seed 42 --threads 2" sh ${_pq_cwd} ${_pq_tmp}
          $<TARGET_FILE:pipeline_fashion_mnist_intree> ${EFFML_FMNIST_DIR})
add_test(NAME pipeline_quick_results
  COMMAND check_pipeline_results ${_pq_out}/results.json ${_pq_out} ${_pq_cwd})
set_tests_properties(pipeline_quick PROPERTIES FIXTURES_SETUP pipeline_quick TIMEOUT 900
                     LABELS pipeline RUN_SERIAL TRUE)
set_tests_properties(pipeline_quick_results PROPERTIES FIXTURES_REQUIRED pipeline_quick
                     LABELS pipeline)
