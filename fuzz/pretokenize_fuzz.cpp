// Fuzzes llama.cpp's pre-tokenizers as calq runs them (LlamaPreTokenizer: the hand-written
// splitters and the LlamaRegex emulation of its std::regex fallback): the first byte picks a
// supported tokenizer.ggml.pre entry, the rest is the text. Any text either splits into non-empty
// words that concatenate back to the whole byte-encoded text, or gives a calq::Error.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_util.h"
#include "io/tokenizer/gguf_pre_table.h"
#include "io/tokenizer/llama_pretokenize.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<calq::io::tok::LlamaPreTokenizer> pre = [] {
    std::vector<calq::io::tok::LlamaPreTokenizer> out;
    for (const calq::io::GgufPreSpec& spec : calq::io::gguf_pre_table()) {
      if (spec.refused.empty()) out.emplace_back(spec.regexes);
    }
    return out;
  }();
  static const calq::io::tok::LlamaPreTokenizer whole{};
  if (size == 0) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    const std::vector<std::string> words = pre[data[0] % pre.size()].split(text);
    std::string joined;
    for (const std::string& w : words) {
      CALQ_FUZZ_CHECK(!w.empty());
      joined += w;
    }
    const std::vector<std::string> one = whole.split(text);
    CALQ_FUZZ_CHECK(joined == (one.empty() ? std::string() : one[0]));
  } catch (const calq::Error& e) {
    calq::fuzz::report(e);
  }
  return 0;
}
