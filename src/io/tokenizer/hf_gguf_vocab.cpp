// tokenizer.json -> tokenizer.ggml.* (see hf_gguf_vocab.h for the rules, which follow what
// llama.cpp's converter writes; the code is calq's own).
#include "io/tokenizer/hf_gguf_vocab.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "io/tokenizer/gguf_vocab.h"

namespace calq::io {
namespace {

using Json = nlohmann::json;

// The converter's placeholder score for every token of a llama-HF vocabulary.
constexpr double kPlaceholderScore = -1000.0;

// The Hugging Face split regexes of the byte-level families and the tokenizer.ggml.pre names
// llama.cpp's converter gives them.
constexpr std::string_view kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

std::optional<Json> read_json(const std::filesystem::path& path, bool required) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (required) fail(ErrorKind::kNotFound, "{}: cannot open the tokenizer file", path.string());
    return std::nullopt;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return Json::parse(ss.str());
  } catch (const Json::exception& e) {
    fail(ErrorKind::kFormat, "{}: malformed JSON: {}", path.string(), e.what());
  }
}

std::string type_of(const Json& j) {
  return j.is_object() && j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>() : "";
}

struct AddedToken {
  int64_t id;
  std::string content;
  bool special;
};

struct HfTokenizer {
  std::string origin;
  Json json;
  Json config;     // tokenizer_config.json or {}
  Json model_cfg;  // config.json or {}
  std::map<int64_t, std::string> vocab;  // model vocabulary by id
  std::vector<AddedToken> added;

  std::optional<int64_t> id_of(const std::string& text) const {
    for (const AddedToken& a : added) {
      if (a.content == text) return a.id;
    }
    for (const auto& [id, t] : vocab) {
      if (t == text) return id;
    }
    return std::nullopt;
  }
  const AddedToken* added_by_id(int64_t id) const {
    for (const AddedToken& a : added) {
      if (a.id == id) return &a;
    }
    return nullptr;
  }
};

HfTokenizer load(const std::filesystem::path& folder) {
  HfTokenizer t;
  const std::filesystem::path file = folder / "tokenizer.json";
  t.origin = file.string();
  t.json = *read_json(file, true);
  t.config = read_json(folder / "tokenizer_config.json", false).value_or(Json::object());
  t.model_cfg = read_json(folder / "config.json", false).value_or(Json::object());
  if (!t.json.is_object() || !t.json.contains("model") || !t.json["model"].is_object()) {
    fail(ErrorKind::kFormat, "{}: no 'model' object", t.origin);
  }
  const Json& model = t.json["model"];
  if (type_of(model) != "BPE") {
    fail(ErrorKind::kUnsupported, "{}: model type '{}': calq converts BPE tokenizers to GGUF only", t.origin,
         type_of(model));
  }
  if (!model.contains("vocab") || !model["vocab"].is_object()) {
    fail(ErrorKind::kFormat, "{}: model.vocab missing", t.origin);
  }
  for (const auto& [text, id] : model["vocab"].items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0) {
      fail(ErrorKind::kFormat, "{}: model.vocab['{}']: id is not a non-negative integer", t.origin, text);
    }
    t.vocab[id.get<int64_t>()] = text;
  }
  if (t.json.contains("added_tokens") && t.json["added_tokens"].is_array()) {
    for (const Json& a : t.json["added_tokens"]) {
      if (!a.is_object() || !a.contains("id") || !a.contains("content")) {
        fail(ErrorKind::kFormat, "{}: added_tokens: entry without id/content", t.origin);
      }
      t.added.push_back({a["id"].get<int64_t>(), a["content"].get<std::string>(), a.value("special", false)});
    }
  }
  return t;
}

// The vocabulary size without added tokens past it (transformers' tokenizer.vocab_size).
int64_t base_vocab_size(const HfTokenizer& t) { return t.vocab.empty() ? 0 : t.vocab.rbegin()->first + 1; }

bool is_byte_token(std::string_view s) {
  const auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f'); };
  return s.size() == 6 && s.substr(0, 3) == "<0x" && hex(s[3]) && hex(s[4]) && s[5] == '>';
}

// Which family the pre-tokenizer says: "" for SentencePiece-style (Metaspace), else the gpt2 pre name.
std::string byte_level_pre(const HfTokenizer& t) {
  const Json& pre = t.json.contains("pre_tokenizer") ? t.json["pre_tokenizer"] : Json();
  const std::string type = type_of(pre);
  if (type == "ByteLevel") {
    if (pre.value("use_regex", true)) return "gpt-2";
  } else if (type == "Sequence" && pre.contains("pretokenizers") && pre["pretokenizers"].size() == 2) {
    const Json& split = pre["pretokenizers"][0];
    const Json& bl = pre["pretokenizers"][1];
    if (type_of(split) == "Split" && type_of(bl) == "ByteLevel" && !bl.value("use_regex", true) &&
        split.contains("pattern") && split["pattern"].contains("Regex")) {
      const std::string regex = split["pattern"]["Regex"].get<std::string>();
      if (regex == kLlama3Regex) return "llama-bpe";
      if (regex == kQwen2Regex) return "qwen2";
      fail(ErrorKind::kUnsupported,
           "{}: pre_tokenizer.pretokenizers[0]: split regex {} is not one calq can name for llama.cpp (it knows "
           "GPT-2's, Llama-3's and Qwen2's)",
           t.origin, regex);
    }
  }
  fail(ErrorKind::kUnsupported,
       "{}: pre_tokenizer of type '{}' is neither SentencePiece-style (Metaspace) nor byte-level (ByteLevel, or a "
       "regex Split then ByteLevel)",
       t.origin, type);
}

bool is_metaspace(const HfTokenizer& t) {
  const Json& pre = t.json.contains("pre_tokenizer") ? t.json["pre_tokenizer"] : Json();
  return type_of(pre) == "Metaspace";
}

void spm_vocab(const HfTokenizer& t, GgufMetadata& out) {
  const Json& model = t.json["model"];
  if (!model.value("byte_fallback", false) || type_of(t.json.value("decoder", Json())) != "Sequence") {
    fail(ErrorKind::kUnsupported,
         "{}: a Metaspace tokenizer needs byte_fallback and a Sequence decoder for llama.cpp's 'llama' vocabulary",
         t.origin);
  }
  const int64_t base = base_vocab_size(t);
  std::vector<std::string> tokens;
  std::vector<double> scores;
  std::vector<int64_t> types;
  for (int64_t id = 0; id < base; ++id) {
    const auto it = t.vocab.find(id);
    if (it == t.vocab.end()) fail(ErrorKind::kFormat, "{}: model.vocab has no token with id {}", t.origin, id);
    const AddedToken* a = t.added_by_id(id);
    tokens.push_back(it->second);
    scores.push_back(kPlaceholderScore);
    GgufTokenType type = GgufTokenType::kNormal;
    if (is_byte_token(it->second)) {
      type = GgufTokenType::kByte;
    } else if (a != nullptr && a->special) {
      type = GgufTokenType::kControl;
    }
    types.push_back(static_cast<int64_t>(type));
  }
  // Added tokens past the model vocabulary, in id order.
  std::vector<AddedToken> extra;
  for (const AddedToken& a : t.added) {
    if (a.id >= base) extra.push_back(a);
  }
  std::sort(extra.begin(), extra.end(), [](const AddedToken& x, const AddedToken& y) { return x.id < y.id; });
  for (const AddedToken& a : extra) {
    if (a.id != static_cast<int64_t>(tokens.size())) {
      fail(ErrorKind::kFormat, "{}: added token '{}' has id {}, leaving a gap after id {}", t.origin, a.content, a.id,
           tokens.size() - 1);
    }
    tokens.push_back(a.content);
    scores.push_back(kPlaceholderScore);
    types.push_back(static_cast<int64_t>(a.special ? GgufTokenType::kControl : GgufTokenType::kUserDefined));
  }
  out.emplace_back("tokenizer.ggml.model", GgufValue::of_string("llama"));
  out.emplace_back("tokenizer.ggml.pre", GgufValue::of_string("default"));
  out.emplace_back("tokenizer.ggml.tokens", GgufValue::of_strings(std::move(tokens)));
  out.emplace_back("tokenizer.ggml.scores", GgufValue::of_float32s(std::move(scores)));
  out.emplace_back("tokenizer.ggml.token_type", GgufValue::of_int32s(std::move(types)));
}

void gpt2_vocab(const HfTokenizer& t, const std::string& pre, GgufMetadata& out) {
  int64_t size = base_vocab_size(t);
  for (const AddedToken& a : t.added) size = std::max(size, a.id + 1);
  if (t.model_cfg.contains("vocab_size") && t.model_cfg["vocab_size"].is_number_integer()) {
    size = std::max(size, t.model_cfg["vocab_size"].get<int64_t>());
  }
  std::vector<std::string> tokens;
  std::vector<int64_t> types;
  for (int64_t id = 0; id < size; ++id) {
    const AddedToken* a = t.added_by_id(id);
    const auto it = t.vocab.find(id);
    if (a != nullptr) {
      tokens.push_back(a->content);
      types.push_back(static_cast<int64_t>(a->special ? GgufTokenType::kControl : GgufTokenType::kUserDefined));
    } else if (it != t.vocab.end()) {
      tokens.push_back(it->second);
      types.push_back(static_cast<int64_t>(GgufTokenType::kNormal));
    } else {
      tokens.push_back(fmt::format("[PAD{}]", id));
      types.push_back(static_cast<int64_t>(GgufTokenType::kUnused));
    }
  }
  std::vector<std::string> merges;
  const Json& model = t.json["model"];
  if (model.contains("merges") && model["merges"].is_array()) {
    for (const Json& m : model["merges"]) {
      if (m.is_string()) {
        merges.push_back(m.get<std::string>());
      } else if (m.is_array() && m.size() == 2) {
        merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
      } else {
        fail(ErrorKind::kFormat, "{}: model.merges: an entry is neither \"a b\" nor [a, b]", t.origin);
      }
    }
  }
  out.emplace_back("tokenizer.ggml.model", GgufValue::of_string("gpt2"));
  out.emplace_back("tokenizer.ggml.pre", GgufValue::of_string(pre));
  out.emplace_back("tokenizer.ggml.tokens", GgufValue::of_strings(std::move(tokens)));
  out.emplace_back("tokenizer.ggml.token_type", GgufValue::of_int32s(std::move(types)));
  out.emplace_back("tokenizer.ggml.merges", GgufValue::of_strings(std::move(merges)));
}

// A "<kind>_token" entry of tokenizer_config.json: a string or an AddedToken object.
std::optional<std::string> config_token(const Json& config, const std::string& key) {
  if (!config.contains(key)) return std::nullopt;
  const Json& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return std::nullopt;
}

// Whether a TemplateProcessing post-processor's single template starts (ends) with `token`.
std::optional<bool> template_adds(const HfTokenizer& t, const std::string& token, bool at_start) {
  const Json& pp = t.json.contains("post_processor") ? t.json["post_processor"] : Json();
  if (type_of(pp) != "TemplateProcessing" || !pp.contains("single") || !pp["single"].is_array() ||
      pp["single"].empty()) {
    return std::nullopt;
  }
  const Json& piece = at_start ? pp["single"].front() : pp["single"].back();
  if (!piece.contains("SpecialToken")) return false;
  return piece["SpecialToken"].value("id", std::string()) == token;
}

void special_tokens(const HfTokenizer& t, int64_t n_tokens, GgufMetadata& out) {
  struct Kind {
    std::string_view hf;
    std::string_view gguf;
  };
  constexpr std::array kKinds = {Kind{"bos", "bos"},       Kind{"eos", "eos"},       Kind{"unk", "unknown"},
                                 Kind{"sep", "seperator"}, Kind{"pad", "padding"}, Kind{"cls", "cls"},
                                 Kind{"mask", "mask"}};
  std::map<std::string_view, std::string> text_of;  // hf kind -> token text, for the template check
  for (const Kind& k : kKinds) {
    std::optional<int64_t> id;
    if (const auto text = config_token(t.config, fmt::format("{}_token", k.hf))) {
      id = t.id_of(*text);
      if (id) text_of[k.hf] = *text;
    }
    const std::string cfg_key = fmt::format("{}_token_id", k.hf);
    if (!id && t.model_cfg.contains(cfg_key) && t.model_cfg[cfg_key].is_number_integer()) {
      id = t.model_cfg[cfg_key].get<int64_t>();
      if (const auto it = t.vocab.find(*id); it != t.vocab.end()) text_of[k.hf] = it->second;
    }
    if (id && *id >= 0 && *id < n_tokens) {
      out.emplace_back(fmt::format("tokenizer.ggml.{}_token_id", k.gguf),
                       GgufValue::of_uint32(static_cast<uint32_t>(*id)));
    }
  }
  for (const std::string_view kind : {std::string_view("bos"), std::string_view("eos")}) {
    const std::string key = fmt::format("add_{}_token", kind);
    std::optional<bool> add;
    if (t.config.contains(key) && t.config[key].is_boolean()) {
      add = t.config[key].get<bool>();
    } else if (const auto it = text_of.find(kind); it != text_of.end()) {
      add = template_adds(t, it->second, kind == "bos");
    }
    if (add) out.emplace_back(fmt::format("tokenizer.ggml.{}", key), GgufValue::of_bool(*add));
  }
  if (t.config.contains("chat_template") && t.config["chat_template"].is_string()) {
    out.emplace_back("tokenizer.chat_template", GgufValue::of_string(t.config["chat_template"].get<std::string>()));
  }
}

}  // namespace

GgufMetadata hf_tokenizer_to_gguf(const std::filesystem::path& folder) {
  const HfTokenizer t = load(folder);
  GgufMetadata out;
  if (is_metaspace(t)) {
    spm_vocab(t, out);
  } else {
    gpt2_vocab(t, byte_level_pre(t), out);
  }
  const int64_t n_tokens = static_cast<int64_t>(out[2].second.array_size());
  special_tokens(t, n_tokens, out);
  return out;
}

}  // namespace calq::io
