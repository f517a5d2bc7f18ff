// Normalizers of tokenizer.json ("normalizer"): NFC, NFD, NFKC, NFKD, Lowercase, Prepend, Replace,
// Strip, StripAccents and Sequence, with Hugging Face `tokenizers` semantics.
//
// Contract: normalize() takes and leaves valid UTF-8; it is const and thread-safe.
// make_normalizer() throws kUnsupported for any other type (naming origin and JSON path) and
// kFormat for malformed fields.
#pragma once

#include <memory>
#include <string>

#include "io/tokenizer/json_util.h"

namespace calq::io::tok {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(std::string& text) const = 0;
};

// `value` is the (non-null) JSON object of one normalizer.
std::unique_ptr<Normalizer> make_normalizer(const Json& value, const JsonPath& at);

}  // namespace calq::io::tok
