// llama.cpp's tokenize/detokenize over a GGUF vocabulary — see gguf_tokenizer.h.
#include "io/tokenizer/gguf_tokenizer.h"

#include <cassert>

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>

#include "core/error.h"
#include "io/tokenizer/bigram_merge.h"
#include "io/tokenizer/byte_level.h"
#include "io/tokenizer/llama_pretokenize.h"
#include "io/tokenizer/unicode.h"

namespace calq::io::tok {

namespace {

constexpr std::string_view kEscapedSpace = "\xE2\x96\x81";  // U+2581

bool is_ascii_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  for (size_t hit = s.find(from); hit != std::string::npos; hit = s.find(from, pos)) {
    out.append(s, pos, hit - pos);
    out += to;
    pos = hit + from.size();
  }
  out.append(s, pos, std::string::npos);
  s = std::move(out);
}

// llama.cpp's clean_up_tokenization_spaces, three in-place passes over the detokenized bytes:
// " ?", " !", " .", " ," lose the space; a lone apostrophe between spaces loses both spaces;
// " 's", " 'm", " 're", " 've" lose the space.
void clean_spaces(std::string& text) {
  size_t total = text.size();
  size_t n = total;
  total = n > 0 ? 1 : 0;
  for (size_t i = 1; i < n; ++i) {
    const char x = text[i];
    if (text[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',')) --total;
    text[total++] = x;
  }

  n = total;
  total = n > 0 ? 1 : 0;
  for (size_t i = 1; i < n; ++i) {
    const char x = text[i];
    if (x == '\'' && i + 1 < n && text[i - 1] == ' ' && text[i + 1] == ' ') {
      --total;
      text[++i] = '\0';  // the space after is skipped; llama.cpp also clears it
    }
    text[total++] = x;
  }

  n = total;
  total = n > 0 ? 1 : 0;
  for (size_t i = 1; i < n; ++i) {
    const char x = text[i];
    if (text[i - 1] == ' ' && x == '\'' && i + 1 < n) {
      const char x1 = text[i + 1];
      if (x1 == 's' || x1 == 'm') {
        --total;
      } else if (x1 != 't' && x1 != 'd' && i + 2 < n) {
        const char x2 = text[i + 2];
        if ((x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e')) --total;
      }
    }
    text[total++] = x;
  }
  text.resize(total);
}

}  // namespace

GgufTokenizer::GgufTokenizer(GgufVocab vocab) : vocab_(std::move(vocab)) {
  const size_t n = vocab_.size();
  ids_.reserve(n);
  for (size_t i = 0; i < n; ++i) ids_.emplace(vocab_.tokens[i], static_cast<int32_t>(i));

  for (size_t i = 0; i < n; ++i) {
    if ((vocab_.attrs[i] & (gguf_attr::kControl | gguf_attr::kUserDefined | gguf_attr::kUnknown)) != 0) {
      special_tokens_.push_back(static_cast<int32_t>(i));
    }
  }
  // llama.cpp sorts by length only (std::sort, unstable); equal lengths keep id order here.
  std::stable_sort(special_tokens_.begin(), special_tokens_.end(), [&](int32_t a, int32_t b) {
    return vocab_.tokens[static_cast<size_t>(a)].size() > vocab_.tokens[static_cast<size_t>(b)].size();
  });

  if (vocab_.type == GgufVocabType::kSpm) {
    // llama.cpp's byte_to_token: "<0xNN>", else the byte itself as a token.
    for (int b = 0; b < 256; ++b) {
      auto it = ids_.find(fmt::format("<0x{:02X}>", b));
      if (it == ids_.end()) it = ids_.find(std::string(1, static_cast<char>(b)));
      spm_byte_ids_[static_cast<size_t>(b)] = it == ids_.end() ? -1 : it->second;
    }
    spm_ = std::make_unique<SpmModel>(ids_, vocab_.scores, spm_byte_ids_, vocab_.origin);
  } else {
    assert(vocab_.pre_spec != nullptr);
    try {
      pre_ = LlamaPreTokenizer(vocab_.pre_spec->regexes);
    } catch (const Error& e) {
      fail(e.kind(), "{}: tokenizer.ggml.pre '{}': {}", vocab_.origin, vocab_.pre_spec->name, e.what());
    }
    merge_ranks_.reserve(vocab_.merges.size());
    for (size_t i = 0; i < vocab_.merges.size(); ++i) {
      const std::string& merge = vocab_.merges[i];
      // "left right" split at the first space after the first byte; the first rank of a pair wins.
      if (merge.size() < 2 || merge.find(' ', 1) == std::string::npos) continue;
      merge_ranks_.emplace(merge, static_cast<int32_t>(i));
    }
  }
}

std::optional<int32_t> GgufTokenizer::token_to_id(std::string_view text) const {
  const auto it = ids_.find(text);
  if (it == ids_.end()) return std::nullopt;
  return it->second;
}

std::vector<GgufTokenizer::Fragment> GgufTokenizer::partition(std::string_view text, bool parse_special) const {
  std::vector<Fragment> fragments;
  if (!text.empty()) fragments.push_back({-1, 0, text.size()});
  std::vector<Fragment> next;
  for (const int32_t id : special_tokens_) {
    const uint32_t attr = vocab_.attrs[static_cast<size_t>(id)];
    if (!parse_special && (attr & (gguf_attr::kControl | gguf_attr::kUnknown)) != 0) continue;
    const std::string& special = vocab_.tokens[static_cast<size_t>(id)];
    next.clear();
    for (const Fragment& fragment : fragments) {
      if (fragment.token >= 0) {
        next.push_back(fragment);
        continue;
      }
      size_t offset = fragment.offset;
      size_t length = fragment.length;
      while (true) {
        const size_t match = text.substr(0, offset + length).find(special, offset);
        if (match == std::string_view::npos) {
          if (length > 0) next.push_back({-1, offset, length});
          break;
        }
        size_t left = match - offset;
        if ((attr & gguf_attr::kLstrip) != 0) {
          while (left > 0 && is_ascii_space(text[offset + left - 1])) --left;
        }
        if (left > 0) next.push_back({-1, offset, left});
        next.push_back({id, 0, 0});
        const size_t right_start = match + special.size();
        if (right_start >= offset + length) break;
        size_t right_length = offset + length - right_start;
        size_t right_offset = right_start;
        if ((attr & gguf_attr::kRstrip) != 0) {
          while (right_length > 0 && is_ascii_space(text[right_offset])) {
            ++right_offset;
            --right_length;
          }
        }
        offset = right_offset;
        length = right_length;
      }
    }
    fragments.swap(next);
  }
  return fragments;
}

void GgufTokenizer::bpe_word(const std::string& word, std::vector<int32_t>& out, std::string& key) const {
  if (vocab_.ignore_merges) {
    if (const auto it = ids_.find(word); it != ids_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  // Two adjacent symbols merge when "left right" is a merge; the lowest rank first.
  std::vector<std::string_view> pieces;
  merge_bigrams(
      word,
      [&](std::string_view left, std::string_view right) -> std::optional<double> {
        key.assign(left);
        key += ' ';
        key.append(right);
        const auto it = merge_ranks_.find(key);
        if (it == merge_ranks_.end()) return std::nullopt;
        return -static_cast<double>(it->second);
      },
      pieces);

  for (const std::string_view piece : pieces) {
    if (const auto it = ids_.find(piece); it != ids_.end()) {
      out.push_back(it->second);
      continue;
    }
    for (size_t i = 0; i < piece.size(); ++i) {
      if (const auto it = ids_.find(piece.substr(i, 1)); it != ids_.end()) out.push_back(it->second);
    }
  }
}

std::vector<int32_t> GgufTokenizer::tokenize(std::string_view text, bool add_special, bool parse_special) const {
  const std::vector<Fragment> fragments = partition(text, parse_special);
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  if (add_special && vocab_.add_bos) out.push_back(vocab_.bos_id);

  if (vocab_.type == GgufVocabType::kSpm) {
    bool prev_special = true;  // the text start counts as "after a special token"
    std::string piece;
    for (const Fragment& fragment : fragments) {
      if (fragment.token >= 0) {
        out.push_back(fragment.token);
        prev_special = true;
        continue;
      }
      piece.clear();
      if (vocab_.add_space_prefix && prev_special) piece += ' ';
      piece.append(text.substr(fragment.offset, fragment.length));
      replace_all(piece, " ", kEscapedSpace);
      spm_->tokenize(piece, out);
      prev_special = false;
    }
  } else {
    std::string key;
    for (const Fragment& fragment : fragments) {
      if (fragment.token >= 0) {
        out.push_back(fragment.token);
        continue;
      }
      for (const std::string& word : pre_.split(text.substr(fragment.offset, fragment.length))) {
        bpe_word(word, out, key);
      }
    }
  }

  if (add_special && vocab_.add_eos) out.push_back(vocab_.eos_id);
  return out;
}

std::string GgufTokenizer::decode_bpe_text(const std::string& token) const {
  std::string out;
  for (const uint32_t c : llama_code_points(token)) {
    const int b = c <= 0x10FFFF ? byte_level_byte(static_cast<char32_t>(c)) : -1;
    if (b >= 0) {
      out += static_cast<char>(b);
      continue;
    }
    // llama.cpp's marker for a character outside the GPT-2 alphabet (it appends the whole token).
    out += "[UNK_BYTE_0x";
    for (const char byte : utf8_encode(static_cast<char32_t>(c))) {
      out += fmt::format("{:02x}", static_cast<unsigned char>(byte));
    }
    out += token;
    out += ']';
  }
  return out;
}

std::string GgufTokenizer::token_to_piece(int32_t id, bool special) const {
  if (id < 0 || static_cast<size_t>(id) >= vocab_.size()) return {};
  const uint32_t attr = vocab_.attrs[static_cast<size_t>(id)];
  const std::string& text = vocab_.tokens[static_cast<size_t>(id)];
  constexpr uint32_t kSpecial = gguf_attr::kUnknown | gguf_attr::kControl;
  if (!special && (attr & kSpecial) != 0) return {};
  if ((attr & (kSpecial | gguf_attr::kUserDefined)) != 0) return text;
  if ((attr & gguf_attr::kNormal) != 0) {
    if (vocab_.type == GgufVocabType::kBpe) return decode_bpe_text(text);
    std::string piece = text;
    replace_all(piece, kEscapedSpace, " ");
    return piece;
  }
  if ((attr & gguf_attr::kByte) != 0) {
    // llama.cpp reads the two characters after "<0x" with strtol.
    const std::string hex = text.size() > 3 ? text.substr(3, 2) : std::string();
    return std::string(1, static_cast<char>(std::strtol(hex.c_str(), nullptr, 16)));
  }
  return {};
}

std::string GgufTokenizer::detokenize(std::span<const int32_t> ids, bool remove_special, bool unparse_special) const {
  bool remove_space = vocab_.add_space_prefix;
  if (remove_special && vocab_.add_bos && !ids.empty() && ids.front() == vocab_.bos_id) {
    remove_space = false;
    ids = ids.subspan(1);
  }
  if (remove_special && vocab_.add_eos && !ids.empty() && ids.back() == vocab_.eos_id) {
    ids = ids.first(ids.size() - 1);
  }
  std::string text;
  for (const int32_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= vocab_.size()) continue;
    std::string piece = token_to_piece(id, unparse_special);
    if (remove_space && !piece.empty() && piece.front() == ' ') piece.erase(0, 1);
    remove_space = false;
    text += piece;
  }
  if (vocab_.clean_spaces) clean_spaces(text);
  return text;
}

}  // namespace calq::io::tok
