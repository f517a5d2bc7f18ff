// The tokenizer stored in a GGUF file's metadata (tokenizer.ggml.*), resolved the way llama.cpp's
// llama_vocab::load resolves it: per-model defaults, then the keys that override them.
//
//   tokenizer.ggml.model       "llama" (SentencePiece-style, score-driven merges, <0xNN> byte
//                              fallback) or "gpt2" (byte-level BPE with ranked merges)
//   tokenizer.ggml.pre         pre-tokenizer name, gpt2 only (llama.cpp's table, gguf_pre_table.h);
//                              absent or empty means "default"; ignored for llama, as llama.cpp ignores it
//   tokenizer.ggml.tokens      string array (required); an empty token becomes "[EMPTY_<id>]"
//   tokenizer.ggml.scores      float32 or int32 array (optional; 0 when absent)
//   tokenizer.ggml.token_type  int32 array (optional; all normal when absent)
//   tokenizer.ggml.merges      string array "left right" (required for gpt2)
//   tokenizer.ggml.{bos,eos,eot,eom,unknown,seperator,padding,mask}_token_id, fim_*_token_id
//   tokenizer.ggml.add_bos_token / add_eos_token / add_space_prefix (bool)
//
// Contract: read_gguf_vocab() throws calq::Error naming the file and the key: kNotFound for a
// missing required key, kFormat for a mistyped key, an array whose length differs from the token
// count, a duplicate token, or add_bos/add_eos set without a BOS/EOS id; kUnsupported for another
// tokenizer.ggml.model, a tokenizer.ggml.pre llama.cpp does not know (the message lists calq's supported
// ones) or one calq does not reproduce (the message says why).
// Special-token ids outside the vocabulary keep their default, as llama.cpp does (with a warning).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "io/tokenizer/gguf_pre_table.h"

namespace calq::io {

class GgufFile;

// tokenizer.ggml.token_type values (gguf-py's TokenType).
enum class GgufTokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

// llama.cpp's per-token attribute bits (llama_token_attr).
namespace gguf_attr {
inline constexpr uint32_t kUndefined = 0;
inline constexpr uint32_t kUnknown = 1u << 0;
inline constexpr uint32_t kUnused = 1u << 1;
inline constexpr uint32_t kNormal = 1u << 2;
inline constexpr uint32_t kControl = 1u << 3;
inline constexpr uint32_t kUserDefined = 1u << 4;
inline constexpr uint32_t kByte = 1u << 5;
inline constexpr uint32_t kLstrip = 1u << 7;
inline constexpr uint32_t kRstrip = 1u << 8;
}  // namespace gguf_attr

enum class GgufVocabType { kSpm, kBpe };  // tokenizer.ggml.model "llama" / "gpt2"

// tokenizer.ggml.pre values calq supports, in llama.cpp's order (error messages list them).
std::vector<std::string_view> gguf_supported_pre();

struct GgufVocab {
  std::string origin;        // the file, for messages
  std::string model;         // tokenizer.ggml.model as stored
  std::string pre;           // tokenizer.ggml.pre as stored ("" when absent)
  std::string general_name;  // general.name ("" when absent); llama.cpp keys a few rules on it
  GgufVocabType type = GgufVocabType::kSpm;
  const GgufPreSpec* pre_spec = nullptr;  // gpt2 only: the pre-tokenizer's entry

  std::vector<std::string> tokens;
  std::vector<float> scores;         // one per token
  std::vector<int32_t> token_types;  // one per token, as stored (GgufTokenType values)
  std::vector<uint32_t> attrs;       // one per token: llama.cpp's attributes after its load rules
  std::vector<std::string> merges;   // gpt2 only, as stored; a merge's rank is its index

  // Special tokens (-1: none).
  int32_t bos_id = -1;
  int32_t eos_id = -1;
  int32_t eot_id = -1;
  int32_t eom_id = -1;
  int32_t unk_id = -1;
  int32_t sep_id = -1;
  int32_t pad_id = -1;
  int32_t mask_id = -1;

  bool add_bos = false;           // encode(add_special_tokens=true) prepends bos_id
  bool add_eos = false;           // ... and appends eos_id
  bool add_space_prefix = false;  // llama: a space before text that starts the input or follows a special token
  bool ignore_merges = false;     // gpt2: a pre-token that is itself a token is not merged
  bool clean_spaces = false;      // decode: clean_up_tokenization_spaces

  size_t size() const { return tokens.size(); }
};

GgufVocab read_gguf_vocab(const GgufFile& file);

}  // namespace calq::io
