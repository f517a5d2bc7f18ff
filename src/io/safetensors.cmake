# safetensors reader/writer (included from src/io/CMakeLists.txt).
target_sources(calq_io PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/safetensors.cpp
  ${CMAKE_CURRENT_LIST_DIR}/safetensors_writer.cpp
  ${CMAKE_CURRENT_LIST_DIR}/hf_quant_pack.cpp
  ${CMAKE_CURRENT_LIST_DIR}/hf_quant_config.cpp)

calq_add_test(calq_safetensors_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/safetensors_test.cpp
          ${CMAKE_CURRENT_LIST_DIR}/safetensors_hostile_test.cpp
          ${CMAKE_CURRENT_LIST_DIR}/hf_quant_pack_test.cpp
  LIBS calq_io calq_formats nlohmann_json::nlohmann_json)
