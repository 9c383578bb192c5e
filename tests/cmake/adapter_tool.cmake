# tests/test_adapter_tool.c runs the effml-adapter program: give it the path.
if(TARGET test_adapter_tool AND TARGET effml-adapter)
  target_compile_definitions(test_adapter_tool PRIVATE EFFML_ADAPTER_TOOL="$<TARGET_FILE:effml-adapter>")
  add_dependencies(test_adapter_tool effml-adapter)
endif()
