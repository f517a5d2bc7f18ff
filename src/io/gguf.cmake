# GGUF reader/writer and the ggml type table (included from src/io/CMakeLists.txt).
target_sources(calq_io PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/gguf.cpp
  ${CMAKE_CURRENT_LIST_DIR}/gguf_check.cpp
  ${CMAKE_CURRENT_LIST_DIR}/gguf_types.cpp
  ${CMAKE_CURRENT_LIST_DIR}/gguf_value.cpp
  ${CMAKE_CURRENT_LIST_DIR}/gguf_writer.cpp)

calq_add_test(calq_gguf_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/gguf_test.cpp
  LIBS calq_io nlohmann_json::nlohmann_json)
# A binary of its own: it replaces the global operator new to measure the largest allocation a
# hostile file can cause.
calq_add_test(calq_gguf_hostile_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/gguf_hostile_test.cpp
  LIBS calq_io)

# llama.cpp layout rules as findings (`calq check`): llama.cpp's own files pass, broken ones are flagged.
calq_add_test(calq_gguf_check_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/gguf_check_test.cpp
  LIBS calq_io)

# io's ggml type table against the GGUF-native formats' block layouts (the same facts, twice).
calq_add_test(calq_gguf_types_formats_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/gguf_types_formats_test.cpp
  LIBS calq_io calq_formats)
