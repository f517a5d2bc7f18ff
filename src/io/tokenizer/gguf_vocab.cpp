// read_gguf_vocab: llama.cpp's vocabulary loading rules (llama_vocab::impl::load) — see gguf_vocab.h.
#include "io/tokenizer/gguf_vocab.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "io/gguf.h"

namespace calq::io {

namespace {

// Token texts llama.cpp treats as end-of-generation; a token with one of these texts is made a
// control token whatever its stored type.
constexpr std::array<std::string_view, 22> kEogTexts = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>", "[e~["};

// Fill-in-the-middle token texts per kind; when the file gives no id for a kind, llama.cpp finds
// the token by text and makes it a control token.
struct FimKind {
  const char* key;
  std::array<std::string_view, 8> texts;  // empty entries unused
};
constexpr std::array kFimKinds = {
    FimKind{"tokenizer.ggml.fim_pre_token_id",
            {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>",
             "<\xef\xbd\x9c" "fim\xe2\x96\x81" "begin\xef\xbd\x9c>", "<PRE>", "\xe2\x96\x81<PRE>",
             "<|code_prefix|>", "<|prefix|>"}},
    FimKind{"tokenizer.ggml.fim_suf_token_id",
            {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>",
             "<\xef\xbd\x9c" "fim\xe2\x96\x81hole\xef\xbd\x9c>", "<SUF>", "\xe2\x96\x81<SUF>",
             "<|code_suffix|>", "<|suffix|>"}},
    FimKind{"tokenizer.ggml.fim_mid_token_id",
            {"<|fim_middle|>", "<fim-middle>", "<fim_middle>",
             "<\xef\xbd\x9c" "fim\xe2\x96\x81" "end\xef\xbd\x9c>", "<MID>", "\xe2\x96\x81<MID>",
             "<|code_middle|>", "<|middle|>"}},
    FimKind{"tokenizer.ggml.fim_pad_token_id", {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"}},
    FimKind{"tokenizer.ggml.fim_rep_token_id",
            {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"}},
    FimKind{"tokenizer.ggml.fim_sep_token_id", {"<|file_sep|>"}},
};

// The deprecated key each FIM kind may also be given by.
const char* deprecated_fim_key(size_t kind) {
  switch (kind) {
    case 0: return "tokenizer.ggml.prefix_token_id";
    case 1: return "tokenizer.ggml.suffix_token_id";
    case 2: return "tokenizer.ggml.middle_token_id";
    default: return nullptr;
  }
}

uint32_t attr_of_type(int32_t type) {
  switch (static_cast<GgufTokenType>(type)) {
    case GgufTokenType::kUnknown: return gguf_attr::kUnknown;
    case GgufTokenType::kUnused: return gguf_attr::kUnused;
    case GgufTokenType::kNormal: return gguf_attr::kNormal;
    case GgufTokenType::kControl: return gguf_attr::kControl;
    case GgufTokenType::kUserDefined: return gguf_attr::kUserDefined;
    case GgufTokenType::kByte: return gguf_attr::kByte;
    default: return gguf_attr::kUndefined;
  }
}

std::string lowercase_ascii(std::string s) {
  for (char& c : s) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return s;
}

class Reader {
 public:
  explicit Reader(const GgufFile& file) : file_(file), origin_(file.path().string()) {}

  std::string what(std::string_view key) const { return fmt::format("{}: key '{}'", origin_, key); }
  const GgufValue* find(std::string_view key) const { return file_.find(key); }

  const GgufValue& require(std::string_view key) const {
    const GgufValue* value = file_.find(key);
    if (value == nullptr) fail(ErrorKind::kNotFound, "{}: missing", what(key));
    return *value;
  }

  // An array value of element type `type`; `type_name` for the message.
  const GgufValue& require_array(const GgufValue& value, std::string_view key, GgufValueType type,
                                 std::string_view type_name) const {
    if (value.type != GgufValueType::kArray || value.array_type != type) {
      fail(ErrorKind::kFormat, "{}: expected an array of {}, got {}", what(key), type_name,
           value.type == GgufValueType::kArray
               ? fmt::format("an array of {}", gguf_value_type_name(value.array_type))
               : std::string(gguf_value_type_name(value.type)));
    }
    return value;
  }

  void require_length(const GgufValue& value, std::string_view key, size_t n_tokens) const {
    if (value.array_size() != n_tokens) {
      fail(ErrorKind::kFormat, "{}: {} entries, but tokenizer.ggml.tokens has {}", what(key),
           value.array_size(), n_tokens);
    }
  }

  // A special-token id key: absent or outside the vocabulary keeps `id` (llama.cpp warns and keeps
  // its default for an out-of-range id); a non-integer is a format error.
  void special_id(std::string_view key, size_t n_tokens, int32_t& id) const {
    const GgufValue* value = file_.find(key);
    if (value == nullptr) return;
    const int64_t v = value->as_int(what(key));
    if (v >= 0 && static_cast<uint64_t>(v) < n_tokens) id = static_cast<int32_t>(v);
  }

  void flag(std::string_view key, bool& out) const {
    if (const GgufValue* value = file_.find(key)) out = value->as_bool(what(key));
  }

  const std::string& origin() const { return origin_; }

 private:
  const GgufFile& file_;
  std::string origin_;
};

// llama.cpp's load-time attribute rules beyond the stored token types, in its order.
void derive_attrs(GgufVocab& vocab, const Reader& reader,
                  const std::unordered_map<std::string_view, int32_t>& ids) {
  auto id_of = [&](std::string_view text) -> int32_t {
    const auto it = ids.find(text);
    return it == ids.end() ? -1 : it->second;
  };
  using namespace gguf_attr;

  // FIM tokens found by text (only for kinds the file gives no id for) and end-of-generation
  // tokens become control tokens.
  for (size_t kind = 0; kind < kFimKinds.size(); ++kind) {
    if (reader.find(kFimKinds[kind].key) != nullptr) continue;
    if (const char* old = deprecated_fim_key(kind); old != nullptr && reader.find(old) != nullptr) continue;
    for (const std::string_view text : kFimKinds[kind].texts) {
      if (text.empty()) continue;
      if (const int32_t id = id_of(text); id >= 0) vocab.attrs[static_cast<size_t>(id)] |= kControl;
    }
  }
  for (const std::string_view text : kEogTexts) {
    if (const int32_t id = id_of(text); id >= 0) vocab.attrs[static_cast<size_t>(id)] |= kControl;
  }
  // Control tokens with "unused" in their text are unused.
  for (size_t id = 0; id < vocab.size(); ++id) {
    if ((vocab.attrs[id] & kControl) != 0 && vocab.tokens[id].find("unused") != std::string::npos) {
      vocab.attrs[id] |= kUnused;
    }
  }
  // gpt-oss's structural tokens are always rendered: user-defined.
  for (const std::string_view text : {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"}) {
    if (const int32_t id = id_of(text); id >= 0) vocab.attrs[static_cast<size_t>(id)] = kUserDefined;
  }
  // o200k_harmony / solar-open: "<|end|>" is not end-of-generation there, and becomes user-defined.
  const bool has_call = id_of("<|call|>") >= 0 || id_of("<|calls|>") >= 0;
  const int32_t end_id = id_of("<|end|>");
  if (end_id >= 0 && has_call && (id_of("<|return|>") >= 0 || id_of("<|flush|>") >= 0)) {
    vocab.attrs[static_cast<size_t>(end_id)] = kUserDefined;
  }
  // gemma4 / paddleocr: "</s>" is a normal token when "<|tool_response>" exists.
  if (const int32_t s_id = id_of("</s>"); s_id >= 0 && id_of("<|tool_response>") >= 0) {
    vocab.attrs[static_cast<size_t>(s_id)] = kNormal;
  }

  // Rules keyed on the pre-tokenizer, the architecture and general.name, applied after the
  // special-token set is fixed; the first that applies wins.
  const std::string name = lowercase_ascii(vocab.general_name);
  std::string arch;
  if (const GgufValue* a = reader.find("general.architecture"); a != nullptr && a->type == GgufValueType::kString) {
    arch = a->s;
  }
  auto has = [](std::string_view hay, std::string_view needle) { return hay.find(needle) != std::string_view::npos; };
  if (has(vocab.pre, "jina-v2-de") || has(vocab.pre, "jina-v2-es") || has(vocab.pre, "jina-v2-code") ||
      has(arch, "nomic-bert-moe") || has(arch, "jina-bert-v3")) {
    if (const int32_t id = id_of("<mask>"); id >= 0) vocab.attrs[static_cast<size_t>(id)] |= kLstrip;
  } else if (name.find("phi-3") != std::string::npos || name.find("phi3") != std::string::npos) {
    for (size_t id = 0; id < vocab.size(); ++id) {
      if ((vocab.attrs[id] & (kControl | kUserDefined | kUnknown)) != 0) vocab.attrs[id] |= kRstrip;
    }
    if (const int32_t id = id_of("</s>"); id >= 0) vocab.attrs[static_cast<size_t>(id)] |= kRstrip;
    for (const std::string_view text : {"<unk>", "<s>", "<|endoftext|>"}) {
      if (const int32_t id = id_of(text); id >= 0) vocab.attrs[static_cast<size_t>(id)] &= ~kRstrip;
    }
  } else if (name.find("modern-bert") != std::string::npos) {
    if (const int32_t id = id_of("[MASK]"); id >= 0) vocab.attrs[static_cast<size_t>(id)] |= kLstrip;
  }
}

}  // namespace

std::vector<std::string_view> gguf_supported_pre() {
  std::vector<std::string_view> names;
  for (const GgufPreSpec& spec : gguf_pre_table()) {
    if (spec.refused.empty()) names.push_back(spec.name);
  }
  return names;
}

GgufVocab read_gguf_vocab(const GgufFile& file) {
  const Reader reader(file);
  GgufVocab vocab;
  vocab.origin = reader.origin();

  vocab.model = reader.require("tokenizer.ggml.model").as_string(reader.what("tokenizer.ggml.model"));
  if (const GgufValue* pre = reader.find("tokenizer.ggml.pre")) {
    vocab.pre = pre->as_string(reader.what("tokenizer.ggml.pre"));
  }
  if (const GgufValue* name = reader.find("general.name")) {
    vocab.general_name = name->as_string(reader.what("general.name"));
  }

  if (vocab.model == "llama") {
    vocab.type = GgufVocabType::kSpm;
    vocab.bos_id = 1;
    vocab.eos_id = 2;
    vocab.unk_id = 0;
    vocab.add_space_prefix = true;
    vocab.add_bos = true;
  } else if (vocab.model == "gpt2") {
    vocab.type = GgufVocabType::kBpe;
    vocab.bos_id = 11;  // llama.cpp's defaults for gpt2 vocabularies
    vocab.eos_id = 11;
    const std::string_view pre = vocab.pre.empty() ? "default" : std::string_view(vocab.pre);
    const GgufPreSpec* spec = find_gguf_pre(pre);
    if (spec == nullptr) {
      fail(ErrorKind::kUnsupported, "{}: unknown pre-tokenizer '{}' (llama.cpp does not know it either; supported: {})",
           reader.what("tokenizer.ggml.pre"), vocab.pre, fmt::join(gguf_supported_pre(), ", "));
    }
    if (!spec->refused.empty()) {
      fail(ErrorKind::kUnsupported, "{}: unsupported pre-tokenizer '{}': {}", reader.what("tokenizer.ggml.pre"),
           vocab.pre, spec->refused);
    }
    vocab.pre_spec = spec;
    vocab.ignore_merges = spec->ignore_merges;
    vocab.add_bos = spec->add_bos;
    vocab.clean_spaces = spec->clean_spaces;
    if (spec->drop_bos) vocab.bos_id = -1;
  } else {
    fail(ErrorKind::kUnsupported, "{}: unsupported tokenizer model '{}' (supported: llama, gpt2)",
         reader.what("tokenizer.ggml.model"), vocab.model);
  }
  reader.flag("tokenizer.ggml.add_space_prefix", vocab.add_space_prefix);

  // Tokens, scores, types.
  const GgufValue& tokens = reader.require_array(reader.require("tokenizer.ggml.tokens"),
                                                 "tokenizer.ggml.tokens", GgufValueType::kString, "string");
  const size_t n = tokens.strings.size();
  vocab.tokens = tokens.strings;
  for (size_t i = 0; i < n; ++i) {
    if (vocab.tokens[i].empty()) vocab.tokens[i] = fmt::format("[EMPTY_{}]", i);
  }

  vocab.scores.assign(n, 0.0f);
  if (const GgufValue* scores = reader.find("tokenizer.ggml.scores")) {
    if (scores->type == GgufValueType::kArray && scores->array_type == GgufValueType::kInt32) {
      reader.require_length(*scores, "tokenizer.ggml.scores", n);
      for (size_t i = 0; i < n; ++i) vocab.scores[i] = static_cast<float>(scores->ints[i]);
    } else {
      reader.require_array(*scores, "tokenizer.ggml.scores", GgufValueType::kFloat32, "float32 or int32");
      reader.require_length(*scores, "tokenizer.ggml.scores", n);
      for (size_t i = 0; i < n; ++i) vocab.scores[i] = static_cast<float>(scores->floats[i]);
    }
  }

  vocab.token_types.assign(n, static_cast<int32_t>(GgufTokenType::kNormal));
  if (const GgufValue* types = reader.find("tokenizer.ggml.token_type")) {
    reader.require_array(*types, "tokenizer.ggml.token_type", GgufValueType::kInt32, "int32");
    reader.require_length(*types, "tokenizer.ggml.token_type", n);
    for (size_t i = 0; i < n; ++i) vocab.token_types[i] = static_cast<int32_t>(types->ints[i]);
  }

  if (vocab.type == GgufVocabType::kBpe) {
    const GgufValue& merges = reader.require_array(reader.require("tokenizer.ggml.merges"),
                                                   "tokenizer.ggml.merges", GgufValueType::kString, "string");
    vocab.merges = merges.strings;
  }

  std::unordered_map<std::string_view, int32_t> ids;
  ids.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const auto [it, inserted] = ids.emplace(vocab.tokens[i], static_cast<int32_t>(i));
    if (!inserted) {
      fail(ErrorKind::kFormat, "{}: duplicate token '{}' at ids {} and {}",
           reader.what("tokenizer.ggml.tokens"), vocab.tokens[i], it->second, i);
    }
  }

  // Special tokens: a default outside the vocabulary is disabled, a key overrides it.
  for (int32_t* id : {&vocab.bos_id, &vocab.eos_id, &vocab.unk_id}) {
    if (*id >= 0 && static_cast<size_t>(*id) >= n) *id = -1;
  }
  reader.special_id("tokenizer.ggml.bos_token_id", n, vocab.bos_id);
  reader.special_id("tokenizer.ggml.eos_token_id", n, vocab.eos_id);
  reader.special_id("tokenizer.ggml.eot_token_id", n, vocab.eot_id);
  reader.special_id("tokenizer.ggml.eom_token_id", n, vocab.eom_id);
  reader.special_id("tokenizer.ggml.unknown_token_id", n, vocab.unk_id);
  reader.special_id("tokenizer.ggml.seperator_token_id", n, vocab.sep_id);
  reader.special_id("tokenizer.ggml.padding_token_id", n, vocab.pad_id);
  reader.special_id("tokenizer.ggml.mask_token_id", n, vocab.mask_id);

  reader.flag("tokenizer.ggml.add_bos_token", vocab.add_bos);
  reader.flag("tokenizer.ggml.add_eos_token", vocab.add_eos);
  if (vocab.add_bos && vocab.bos_id < 0) {
    fail(ErrorKind::kFormat, "{}: true, but there is no BOS token (tokenizer.ggml.bos_token_id)",
         reader.what("tokenizer.ggml.add_bos_token"));
  }
  if (vocab.add_eos && vocab.eos_id < 0) {
    fail(ErrorKind::kFormat, "{}: true, but there is no EOS token (tokenizer.ggml.eos_token_id)",
         reader.what("tokenizer.ggml.add_eos_token"));
  }

  vocab.attrs.resize(n);
  for (size_t i = 0; i < n; ++i) vocab.attrs[i] = attr_of_type(vocab.token_types[i]);
  derive_attrs(vocab, reader, ids);
  return vocab;
}

}  // namespace calq::io
