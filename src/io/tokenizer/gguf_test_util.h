// Helpers for the GGUF tokenizer tests: in-memory GGUF vocabularies and a naive reference of
// llama.cpp's SPM merge rule (a quadratic loop written from the rule's definition, independent of
// the priority-queue implementation in spm.cpp).
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "io/gguf.h"
#include "io/tokenizer/gguf_vocab.h"

namespace calq::testing {

// A GGUF file (no tensors) holding `metadata`, parsed back; named "synthetic.gguf" in messages.
inline io::GgufFile gguf_from_metadata(const io::GgufMetadata& metadata) {
  const std::vector<std::byte> bytes = io::gguf_to_bytes(metadata, {});
  return io::GgufFile::from_bytes(bytes, "synthetic.gguf");
}

struct SynthToken {
  std::string text;
  float score = 0.0f;
  io::GgufTokenType type = io::GgufTokenType::kNormal;
};

// tokenizer.ggml.{model, tokens, scores, token_type} for `tokens`, plus `extra` entries.
inline io::GgufMetadata vocab_metadata(std::string model, const std::vector<SynthToken>& tokens,
                                       io::GgufMetadata extra = {}) {
  std::vector<std::string> texts;
  std::vector<double> scores;
  std::vector<int64_t> types;
  for (const SynthToken& t : tokens) {
    texts.push_back(t.text);
    scores.push_back(static_cast<double>(t.score));
    types.push_back(static_cast<int64_t>(t.type));
  }
  io::GgufMetadata metadata = {
      {"general.architecture", io::GgufValue::of_string("llama")},
      {"tokenizer.ggml.model", io::GgufValue::of_string(std::move(model))},
      {"tokenizer.ggml.tokens", io::GgufValue::of_strings(std::move(texts))},
      {"tokenizer.ggml.scores", io::GgufValue::of_float32s(std::move(scores))},
      {"tokenizer.ggml.token_type", io::GgufValue::of_int32s(std::move(types))},
  };
  for (auto& entry : extra) metadata.push_back(std::move(entry));
  return metadata;
}

// llama.cpp's SPM tokenization of special-free `text` by definition: escape spaces (after the
// prefix space), cut into UTF-8 characters, then repeatedly merge the adjacent pair whose
// concatenation is the best-scoring token (the leftmost such pair on ties); characters outside the
// vocabulary become <0xNN> tokens (or the raw byte as a token).
inline std::vector<int32_t> naive_spm_encode(const io::GgufVocab& vocab, std::string_view text) {
  auto find = [&](std::string_view s) -> int32_t {
    for (size_t i = 0; i < vocab.size(); ++i) {
      if (vocab.tokens[i] == s) return static_cast<int32_t>(i);
    }
    return -1;
  };
  // Index by text for speed; a linear scan is the fallback only for the byte tokens below.
  std::unordered_map<std::string, int32_t> ids;
  for (size_t i = 0; i < vocab.size(); ++i) ids.emplace(vocab.tokens[i], static_cast<int32_t>(i));

  std::string escaped;
  if (vocab.add_space_prefix && !text.empty()) escaped += "\xE2\x96\x81";
  for (const char c : text) {
    if (c == ' ') {
      escaped += "\xE2\x96\x81";
    } else {
      escaped += c;
    }
  }
  std::vector<std::string> symbols;
  for (size_t i = 0; i < escaped.size();) {
    const auto lead = static_cast<unsigned char>(escaped[i]);
    size_t len = lead < 0xC0 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
    len = std::min(len, escaped.size() - i);
    symbols.push_back(escaped.substr(i, len));
    i += len;
  }
  while (true) {
    size_t best = symbols.size();
    float best_score = 0.0f;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      const auto it = ids.find(symbols[i] + symbols[i + 1]);
      if (it == ids.end()) continue;
      const float score = vocab.scores[static_cast<size_t>(it->second)];
      if (best == symbols.size() || score > best_score) {
        best = i;
        best_score = score;
      }
    }
    if (best == symbols.size()) break;
    symbols[best] += symbols[best + 1];
    symbols.erase(symbols.begin() + static_cast<std::ptrdiff_t>(best) + 1);
  }
  std::vector<int32_t> out;
  for (const std::string& symbol : symbols) {
    if (const auto it = ids.find(symbol); it != ids.end()) {
      out.push_back(it->second);
      continue;
    }
    for (const char c : symbol) {
      int32_t id = find(fmt::format("<0x{:02X}>", static_cast<unsigned char>(c)));
      if (id < 0) id = find(std::string(1, c));
      out.push_back(id);
    }
  }
  return out;
}

}  // namespace calq::testing
