# Tokenizer: the Hugging Face tokenizer.json pipeline (see src/io/tokenizer.h) and llama.cpp's
# GGUF-embedded tokenizers (gguf_vocab.h, gguf_tokenizer.h).
target_sources(calq_io PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/added_tokens.cpp
  ${CMAKE_CURRENT_LIST_DIR}/bigram_merge.cpp
  ${CMAKE_CURRENT_LIST_DIR}/bpe.cpp
  ${CMAKE_CURRENT_LIST_DIR}/byte_level.cpp
  ${CMAKE_CURRENT_LIST_DIR}/decoders.cpp
  ${CMAKE_CURRENT_LIST_DIR}/gguf_tokenizer.cpp
  ${CMAKE_CURRENT_LIST_DIR}/gguf_vocab.cpp
  ${CMAKE_CURRENT_LIST_DIR}/hf_gguf_vocab.cpp
  ${CMAKE_CURRENT_LIST_DIR}/json_util.cpp
  ${CMAKE_CURRENT_LIST_DIR}/gguf_pre_table.cpp
  ${CMAKE_CURRENT_LIST_DIR}/llama_pretokenize.cpp
  ${CMAKE_CURRENT_LIST_DIR}/llama_regex.cpp
  ${CMAKE_CURRENT_LIST_DIR}/normalizers.cpp
  ${CMAKE_CURRENT_LIST_DIR}/pattern.cpp
  ${CMAKE_CURRENT_LIST_DIR}/post_processors.cpp
  ${CMAKE_CURRENT_LIST_DIR}/pre_tokenizers.cpp
  ${CMAKE_CURRENT_LIST_DIR}/spm.cpp
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer.cpp
  ${CMAKE_CURRENT_LIST_DIR}/unicode.cpp)

calq_add_test(calq_tokenizer_test
  SOURCES
    ${CMAKE_CURRENT_LIST_DIR}/reference_test.cpp
    ${CMAKE_CURRENT_LIST_DIR}/components_test.cpp
    ${CMAKE_CURRENT_LIST_DIR}/errors_test.cpp
    ${CMAKE_CURRENT_LIST_DIR}/bigram_merge_test.cpp
  LIBS calq_io nlohmann_json::nlohmann_json)

# llama.cpp's GGUF-embedded tokenizers: its vocab tests, the reference model's GGUF, synthetic vocabs.
calq_add_test(calq_gguf_vocab_test
  SOURCES
    ${CMAKE_CURRENT_LIST_DIR}/gguf_vocab_test.cpp
    ${CMAKE_CURRENT_LIST_DIR}/gguf_tokenizer_test.cpp
    ${CMAKE_CURRENT_LIST_DIR}/llama_regex_test.cpp
    ${CMAKE_CURRENT_LIST_DIR}/gguf_vocab_families_test.cpp
  LIBS calq_io nlohmann_json::nlohmann_json)

# tokenizer.json -> tokenizer.ggml.* as llama.cpp's converter writes it (GGUF export).
calq_add_test(calq_hf_gguf_vocab_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/hf_gguf_vocab_test.cpp
  LIBS calq_io)
