# The main job's --quick run (issue 8): build examples/pipeline_fashion_mnist.c
# in-tree, run it on Fashion-MNIST (dataset-fashion-mnist), then check the
# structure and sanity of its results.json with check_pipeline_results.
set(EFFML_FMNIST_DIR /usr/share/datasets/fashion-mnist CACHE PATH "Fashion-MNIST IDX directory")

add_executable(pipeline_fashion_mnist_intree ${PROJECT_SOURCE_DIR}/examples/pipeline_fashion_mnist.c)
target_link_libraries(pipeline_fashion_mnist_intree PRIVATE effml m)
target_compile_definitions(pipeline_fashion_mnist_intree PRIVATE _POSIX_C_SOURCE=200809L)

add_executable(check_pipeline_results ${CMAKE_CURRENT_SOURCE_DIR}/check_pipeline_results.c)
target_include_directories(check_pipeline_results PRIVATE ${CJSON_INCLUDE_DIRS})
target_link_libraries(check_pipeline_results PRIVATE ${CJSON_LINK_LIBRARIES})

set(_pq_out ${CMAKE_CURRENT_BINARY_DIR}/pipeline_quick)
add_test(NAME pipeline_quick
  COMMAND ${CMAKE_COMMAND} -E env OPENBLAS_NUM_THREADS=2
          $<TARGET_FILE:pipeline_fashion_mnist_intree> --quick --data ${EFFML_FMNIST_DIR}
          --out ${_pq_out} --seed 42 --threads 2)
add_test(NAME pipeline_quick_results
  COMMAND check_pipeline_results ${_pq_out}/results.json ${_pq_out})
set_tests_properties(pipeline_quick PROPERTIES FIXTURES_SETUP pipeline_quick TIMEOUT 900
                     LABELS pipeline RUN_SERIAL TRUE)
set_tests_properties(pipeline_quick_results PROPERTIES FIXTURES_REQUIRED pipeline_quick
                     LABELS pipeline)
