// A character-level tokenizer.json for tests on tiny models (vocabulary of a few letters).
#pragma once

#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

namespace calq::testing {

// Writes a character-level BPE tokenizer.json: letter i of `letters` is token i, no merges, no
// pre-tokenizer, so every letter of a text is one token.
inline void write_letter_tokenizer(const std::filesystem::path& path, std::string_view letters) {
  std::string vocab;
  for (size_t i = 0; i < letters.size(); ++i) {
    if (i > 0) vocab += ", ";
    vocab.append("\"").append(1, letters[i]).append("\": ").append(std::to_string(i));
  }
  std::ofstream(path) << R"({"version": "1.0", "added_tokens": [], "normalizer": null,
      "pre_tokenizer": null, "post_processor": null, "decoder": null,
      "model": {"type": "BPE", "vocab": {)" << vocab << R"(}, "merges": [], "byte_fallback": false,
                "fuse_unk": false, "unk_token": null, "dropout": null,
                "continuing_subword_prefix": null, "end_of_word_suffix": null}})";
}

}  // namespace calq::testing
