// Tokenizer — the Hugging Face `tokenizers` pipeline as used by LLMs, loaded from tokenizer.json:
//   added/special tokens (matched first, honouring lstrip/rstrip/normalized/single_word)
//   -> normalizer (NFC, NFKC, Prepend, Replace, Sequence, ...)
//   -> pre-tokenizer (Metaspace, ByteLevel, Split with PCRE2 regex, Digits, Sequence, ...)
//   -> BPE model (merge ranks, byte_fallback, fuse_unk, unk_token, ignore_merges)
//   -> post-processor (TemplateProcessing, ByteLevel) when add_special_tokens
// and the decoders (ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence).
//
// Contract: encode()/decode() give exactly the ids/text Hugging Face `tokenizers` gives for the
// same tokenizer.json. A component type calq does not implement is an ErrorKind::kUnsupported
// error naming the file and the JSON path of the component; malformed JSON is kFormat.
// Encoding is thread-safe (const) and deterministic.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace calq::io {

class GgufFile;

class Tokenizer {
 public:
  static Tokenizer from_file(const std::filesystem::path& path);
  // `origin` names the source in error messages (a path, or "<memory>").
  static Tokenizer from_json_text(std::string_view json_text, std::string_view origin);
  // The tokenizer embedded in a GGUF file (tokenizer.ggml.*; see io/tokenizer/gguf_vocab.h), with
  // llama.cpp's semantics instead of Hugging Face's: encode(text, add_special_tokens) is
  // llama_tokenize(text, add_special = add_special_tokens, parse_special), i.e. BOS/EOS per the
  // file's add_bos/add_eos flags, and control tokens written in the text are matched only when
  // `parse_special` (user-defined tokens always are). decode(ids, skip_special_tokens) is
  // llama_detokenize(ids, remove_special = skip_special_tokens, unparse_special = !skip_special_tokens).
  // Errors: see read_gguf_vocab().
  static Tokenizer from_gguf(const GgufFile& file, bool parse_special = false);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = false) const;
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

  size_t vocab_size() const;  // model vocabulary plus added tokens
  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(int32_t id) const;

  class Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace calq::io
