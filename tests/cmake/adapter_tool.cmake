# tests/test_adapter_tool.c runs the effml-adapter program: give it the path.
if(TARGET test_adapter_tool AND TARGET effml-adapter)
  target_compile_definitions(test_adapter_tool PRIVATE EFFML_ADAPTER_TOOL="$<TARGET_FILE:effml-adapter>")
  add_dependencies(test_adapter_tool effml-adapter)
  target_include_directories(test_adapter_tool PRIVATE ${CJSON_INCLUDE_DIRS}) # to compare adapter_config.json files
  target_link_libraries(test_adapter_tool PRIVATE ${CJSON_LINK_LIBRARIES})
endif()
