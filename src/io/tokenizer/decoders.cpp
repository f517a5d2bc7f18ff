#include "io/tokenizer/decoders.h"

#include <optional>

#include "io/tokenizer/byte_level.h"
#include "io/tokenizer/pattern.h"
#include "io/tokenizer/unicode.h"

namespace calq::io::tok {
namespace {

class ByteLevelDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const std::string& token : tokens) {
      // A token made entirely of alphabet characters stands for bytes; any other (an added token
      // such as "<|endoftext|>" with characters outside the alphabet) is taken as it is.
      const size_t mark = bytes.size();
      bool all_mapped = true;
      size_t pos = 0;
      while (pos < token.size()) {
        const int b = byte_level_byte(next_code_point(token, pos));
        if (b < 0) {
          all_mapped = false;
          break;
        }
        bytes += static_cast<char>(b);
      }
      if (!all_mapped) {
        bytes.resize(mark);
        bytes += token;
      }
    }
    tokens.assign(1, utf8_lossy(bytes));
  }
};

class MetaspaceDecoder final : public Decoder {
 public:
  MetaspaceDecoder(char32_t replacement, bool strip_first)
      : replacement_(replacement), strip_first_(strip_first) {}

  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      // HF drops every replacement character of the first token, not only a leading one.
      const bool drop = i == 0 && strip_first_;
      std::string out;
      out.reserve(tokens[i].size());
      size_t pos = 0;
      while (pos < tokens[i].size()) {
        const size_t start = pos;
        if (next_code_point(tokens[i], pos) == replacement_) {
          if (!drop) out += ' ';
        } else {
          out.append(tokens[i], start, pos - start);
        }
      }
      tokens[i] = std::move(out);
    }
  }

 private:
  char32_t replacement_;
  bool strip_first_;
};

class ReplaceDecoder final : public Decoder {
 public:
  ReplaceDecoder(Pattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& token : tokens) token = pattern_.replace_all(token, content_);
  }

 private:
  Pattern pattern_;
  std::string content_;
};

// The byte of a "<0xNN>" token, if it is one (Rust u8::from_str_radix accepts either case).
std::optional<unsigned char> byte_token(const std::string& token) {
  if (token.size() != 6 || token.compare(0, 3, "<0x") != 0 || token[5] != '>') return std::nullopt;
  int value = 0;
  for (size_t i = 3; i < 5; ++i) {
    const char c = token[i];
    int digit = -1;
    if (c >= '0' && c <= '9') digit = c - '0';
    if (c >= 'a' && c <= 'f') digit = c - 'a' + 10;
    if (c >= 'A' && c <= 'F') digit = c - 'A' + 10;
    if (digit < 0) return std::nullopt;
    value = value * 16 + digit;
  }
  return static_cast<unsigned char>(value);
}

class ByteFallbackDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string run;
    size_t run_tokens = 0;
    const auto flush = [&] {
      if (run_tokens == 0) return;
      if (is_valid_utf8(run)) {
        out.push_back(run);
      } else {
        // HF: a run that is not valid UTF-8 becomes one U+FFFD per byte token.
        for (size_t i = 0; i < run_tokens; ++i) out.emplace_back("\xEF\xBF\xBD");
      }
      run.clear();
      run_tokens = 0;
    };
    for (std::string& token : tokens) {
      if (const auto byte = byte_token(token)) {
        run += static_cast<char>(*byte);
        ++run_tokens;
      } else {
        flush();
        out.push_back(std::move(token));
      }
    }
    flush();
    tokens = std::move(out);
  }
};

class FuseDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string joined;
    for (const std::string& token : tokens) joined += token;
    tokens.assign(1, std::move(joined));
  }
};

class StripDecoder final : public Decoder {
 public:
  StripDecoder(char32_t content, size_t start, size_t stop) : content_(content), start_(start), stop_(stop) {}

  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<size_t> offsets;  // byte offset of each character of a token, plus its end
    std::vector<char32_t> chars;
    for (std::string& token : tokens) {
      offsets.clear();
      chars.clear();
      for (size_t pos = 0; pos < token.size();) {
        offsets.push_back(pos);
        chars.push_back(next_code_point(token, pos));
      }
      offsets.push_back(token.size());
      size_t first = 0;
      while (first < std::min(start_, chars.size()) && chars[first] == content_) ++first;
      size_t last = chars.size();
      for (size_t i = 0; i < stop_ && last > first && chars[last - 1] == content_; ++i) --last;
      token = token.substr(offsets[first], offsets[last] - offsets[first]);
    }
  }

 private:
  char32_t content_;
  size_t start_;
  size_t stop_;
};

// HF's cleanup for WordPiece decoding.
std::string cleanup_spaces(std::string text) {
  static const std::pair<const char*, const char*> kRules[] = {
      {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"},
      {" 'm", "'m"}, {" do not", " don't"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (const auto& [from, to] : kRules) text = Pattern::literal(from).replace_all(text, to);
  return text;
}

class WordPieceDecoder final : public Decoder {
 public:
  WordPieceDecoder(std::string prefix, bool cleanup) : prefix_(std::move(prefix)), cleanup_(cleanup) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string& token = tokens[i];
      if (i != 0) {
        if (token.starts_with(prefix_)) {
          token.erase(0, prefix_.size());
        } else {
          std::string spaced(1, ' ');
          spaced += token;
          token = std::move(spaced);
        }
      }
      if (cleanup_) token = cleanup_spaces(std::move(token));
    }
  }

 private:
  std::string prefix_;
  bool cleanup_;
};

class BpeDecoder final : public Decoder {
 public:
  explicit BpeDecoder(std::string suffix) : suffix_(std::move(suffix)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      tokens[i] = Pattern::literal(suffix_).replace_all(tokens[i], i + 1 == tokens.size() ? "" : " ");
    }
  }

 private:
  std::string suffix_;
};

class SequenceDecoder final : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> parts) : parts_(std::move(parts)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& part : parts_) part->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};

size_t require_count(const Json& value, const JsonPath& at, std::string_view key) {
  const int64_t n = optional_int(value, at, key, 0);
  if (n < 0) at.key(key).format_error("expected a non-negative integer");
  return static_cast<size_t>(n);
}

}  // namespace

std::unique_ptr<Decoder> make_decoder(const Json& value, const JsonPath& at) {
  const std::string type = component_type(value, at);
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Metaspace") {
    bool strip_first = optional_bool(value, at, "add_prefix_space", true);
    if (const auto scheme = optional_string(value, at, "prepend_scheme")) strip_first = *scheme != "never";
    return std::make_unique<MetaspaceDecoder>(require_char(value, at, "replacement"), strip_first);
  }
  if (type == "Replace") {
    return std::make_unique<ReplaceDecoder>(
        Pattern::from_json(require(value, at, "pattern"), at.key("pattern")),
        require_string(value, at, "content"));
  }
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    return std::make_unique<StripDecoder>(require_char(value, at, "content"),
                                          require_count(value, at, "start"),
                                          require_count(value, at, "stop"));
  }
  if (type == "WordPiece") {
    return std::make_unique<WordPieceDecoder>(optional_string(value, at, "prefix").value_or("##"),
                                              optional_bool(value, at, "cleanup", true));
  }
  if (type == "BPEDecoder") {
    return std::make_unique<BpeDecoder>(optional_string(value, at, "suffix").value_or("</w>"));
  }
  if (type == "Sequence") {
    const JsonPath list_at = at.key("decoders");
    const Json& list = require_array(require(value, at, "decoders"), list_at);
    std::vector<std::unique_ptr<Decoder>> parts;
    for (size_t i = 0; i < list.size(); ++i) parts.push_back(make_decoder(list[i], list_at.index(i)));
    return std::make_unique<SequenceDecoder>(std::move(parts));
  }
  at.unsupported("decoder", type);
}

}  // namespace calq::io::tok
