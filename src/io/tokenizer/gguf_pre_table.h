// llama.cpp's table of gpt2-model pre-tokenizers (tokenizer.ggml.pre): for each name, the regex
// list its llm_tokenizer_bpe applies in order and the vocabulary flags its llama_vocab::load sets
// (facts of llama.cpp's src/llama-vocab.cpp; which llama.cpp is in docs/formats.md).
//
// A regex is run either by one of llama.cpp's hand-written splitters, chosen by the exact regex
// string as llama.cpp chooses it (llama_pretokenize.h), or by its std::regex fallback, which
// calq emulates with LlamaRegex (llama_regex.h). A name whose behaviour calq does not reproduce
// carries the reason in `refused`; loading such a vocabulary is an error that gives it.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace calq::io {

struct GgufPreSpec {
  std::string_view name;
  std::span<const std::string_view> regexes;
  bool ignore_merges = false;  // a pre-token that is itself a token is not merged
  bool add_bos = false;        // encode(add_special_tokens) prepends BOS unless the file says otherwise
  bool clean_spaces = true;    // decode: clean_up_tokenization_spaces
  bool drop_bos = false;       // no BOS id unless the file names one (glm4, chatglm-bpe)
  std::string_view refused;    // non-empty: calq cannot tokenize it exactly, and why
};

// Every name of llama.cpp's table, in its order ("default" first).
std::span<const GgufPreSpec> gguf_pre_table();

// The entry for `name`, or nullptr for a name llama.cpp does not know either.
const GgufPreSpec* find_gguf_pre(std::string_view name);

}  // namespace calq::io

namespace calq::io::tok {
// The distinct regexes of the supported entries that calq runs through LlamaRegex (for tests).
std::vector<std::string> gguf_pre_table_generic_regexes();
}  // namespace calq::io::tok
