// Tokenizer: loading tokenizer.json and running the Hugging Face pipeline (see io/tokenizer.h).
#include "io/tokenizer.h"

#include <fstream>
#include <sstream>

#include "core/error.h"
#include "io/tokenizer/added_tokens.h"
#include "io/tokenizer/bpe.h"
#include "io/tokenizer/decoders.h"
#include "io/tokenizer/gguf_tokenizer.h"
#include "io/tokenizer/json_util.h"
#include "io/tokenizer/normalizers.h"
#include "io/tokenizer/post_processors.h"
#include "io/tokenizer/pre_tokenizers.h"
#include "io/tokenizer/unicode.h"

namespace calq::io {

using tok::Json;
using tok::JsonPath;

class Tokenizer::Impl {
 public:
  Impl(const Json& root, std::string_view origin);
  // A GGUF-embedded tokenizer: every method forwards to it (the Hugging Face members stay empty).
  Impl(std::unique_ptr<tok::GgufTokenizer> gguf, bool parse_special)
      : gguf_(std::move(gguf)), gguf_parse_special_(parse_special) {}

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const;
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const;

  size_t vocab_size() const { return gguf_ ? gguf_->vocab().size() : vocab_size_; }
  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(int32_t id) const;

 private:
  const std::string* token_text(int32_t id) const;

  std::string origin_;
  std::unique_ptr<tok::BpeModel> model_;
  std::unique_ptr<tok::Normalizer> normalizer_;
  std::unique_ptr<tok::PreTokenizer> pre_tokenizer_;
  std::unique_ptr<tok::PostProcessor> post_processor_;
  std::unique_ptr<tok::Decoder> decoder_;
  tok::AddedVocabulary added_;
  size_t vocab_size_ = 0;
  std::unique_ptr<tok::GgufTokenizer> gguf_;
  bool gguf_parse_special_ = false;
};

namespace {

// A present, non-null member, or nullptr.
const Json* optional_component(const Json& root, std::string_view key) {
  const auto it = root.find(key);
  return it == root.end() || it->is_null() ? nullptr : &*it;
}

}  // namespace

Tokenizer::Impl::Impl(const Json& root, std::string_view origin) : origin_(origin) {
  const JsonPath top(origin_, "");
  tok::require_object(root, top);

  const JsonPath model_at = top.key("model");
  const Json& model = tok::require_object(tok::require(root, top, "model"), model_at);
  // Files written by old `tokenizers` versions may omit the model's "type"; BPE is the one with merges.
  const std::string model_type = model.contains("type") ? tok::component_type(model, model_at)
                                 : model.contains("merges") ? "BPE"
                                                            : "";
  if (model_type != "BPE") model_at.unsupported("model", model_type.empty() ? "<none>" : model_type);
  model_ = tok::BpeModel::from_json(model, model_at);

  if (const Json* n = optional_component(root, "normalizer")) {
    normalizer_ = tok::make_normalizer(*n, top.key("normalizer"));
  }
  if (const Json* p = optional_component(root, "pre_tokenizer")) {
    pre_tokenizer_ = tok::make_pre_tokenizer(*p, top.key("pre_tokenizer"));
  }
  if (const Json* p = optional_component(root, "post_processor")) {
    post_processor_ = tok::make_post_processor(*p, top.key("post_processor"));
  }
  if (const Json* d = optional_component(root, "decoder")) {
    decoder_ = tok::make_decoder(*d, top.key("decoder"));
  }
  const Json* added = optional_component(root, "added_tokens");
  added_ = tok::AddedVocabulary::from_json(added != nullptr ? *added : Json(), top.key("added_tokens"),
                                           *model_, normalizer_.get());

  // HF get_vocab_size(with_added_tokens=true): distinct token strings of the model and added tokens.
  vocab_size_ = model_->vocab().size();
  for (const tok::AddedToken& token : added_.tokens()) {
    if (!model_->token_to_id(token.content)) ++vocab_size_;
  }
}

std::vector<int32_t> Tokenizer::Impl::encode(std::string_view text, bool add_special_tokens) const {
  if (gguf_) return gguf_->tokenize(text, add_special_tokens, gguf_parse_special_);
  // HF works on Python str (always valid Unicode); invalid bytes are decoded leniently here.
  std::string repaired;
  if (!tok::is_valid_utf8(text)) {
    repaired = tok::utf8_lossy(text);
    text = repaired;
  }

  // 1. Added tokens that match the raw text; 2. normalize the rest and match normalized tokens.
  std::vector<tok::Piece> raw;
  added_.split(text, /*at_origin=*/true, /*normalized_kind=*/false, raw);
  std::vector<tok::Piece> pieces;
  pieces.reserve(raw.size());
  for (tok::Piece& piece : raw) {
    if (piece.token_id >= 0) {
      pieces.push_back(std::move(piece));
      continue;
    }
    if (normalizer_) normalizer_->normalize(piece.text);
    added_.split(piece.text, piece.at_origin, /*normalized_kind=*/true, pieces);
  }
  raw.clear();

  // 3. Pre-tokenize, 4. run the model on every word, 5. post-process.
  if (pre_tokenizer_) pre_tokenizer_->pre_tokenize(pieces);
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  tok::WordCache cache;
  for (const tok::Piece& piece : pieces) {
    if (piece.token_id >= 0) {
      ids.push_back(piece.token_id);
    } else {
      model_->tokenize(piece.text, ids, &cache);
    }
  }
  if (add_special_tokens && post_processor_) post_processor_->process(ids);
  return ids;
}

const std::string* Tokenizer::Impl::token_text(int32_t id) const {
  if (const tok::AddedToken* token = added_.find_id(id)) return &token->content;
  return model_->id_to_token(id);
}

std::string Tokenizer::Impl::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  if (gguf_) return gguf_->detokenize(ids, skip_special_tokens, !skip_special_tokens);
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (const int32_t id : ids) {
    const std::string* text = token_text(id);
    if (text == nullptr) continue;  // HF skips ids it does not know
    if (skip_special_tokens && added_.is_special(*text)) continue;
    tokens.push_back(*text);
  }
  std::string out;
  if (decoder_) {
    decoder_->decode_chain(tokens);
    for (const std::string& t : tokens) out += t;
  } else {
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i != 0) out += ' ';
      out += tokens[i];
    }
  }
  return out;
}

std::optional<int32_t> Tokenizer::Impl::token_to_id(std::string_view token) const {
  if (gguf_) return gguf_->token_to_id(token);
  if (const tok::AddedToken* added = added_.find_content(token)) return added->id;
  return model_->token_to_id(token);
}

std::optional<std::string> Tokenizer::Impl::id_to_token(int32_t id) const {
  if (gguf_) {
    if (id < 0 || static_cast<size_t>(id) >= gguf_->vocab().size()) return std::nullopt;
    return gguf_->vocab().tokens[static_cast<size_t>(id)];
  }
  const std::string* text = token_text(id);
  if (text == nullptr) return std::nullopt;
  return *text;
}

Tokenizer Tokenizer::from_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(ErrorKind::kIo, "{}: cannot open tokenizer file", path.string());
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) fail(ErrorKind::kIo, "{}: cannot read tokenizer file", path.string());
  return from_json_text(buffer.str(), path.string());
}

Tokenizer Tokenizer::from_json_text(std::string_view json_text, std::string_view origin) {
  Json root;
  try {
    root = Json::parse(json_text.begin(), json_text.end());
  } catch (const Json::exception& e) {
    fail(ErrorKind::kFormat, "{}: malformed JSON: {}", origin, e.what());
  }
  return Tokenizer(std::make_unique<Impl>(root, origin));
}

Tokenizer Tokenizer::from_gguf(const GgufFile& file, bool parse_special) {
  auto gguf = std::make_unique<tok::GgufTokenizer>(read_gguf_vocab(file));
  return Tokenizer(std::make_unique<Impl>(std::move(gguf), parse_special));
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  return impl_->encode(text, add_special_tokens);
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  return impl_->decode(ids, skip_special_tokens);
}

size_t Tokenizer::vocab_size() const { return impl_->vocab_size(); }

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  return impl_->token_to_id(token);
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const { return impl_->id_to_token(id); }

}  // namespace calq::io
