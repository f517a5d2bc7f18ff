// Decoders of tokenizer.json ("decoder"): ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip,
// WordPiece, BPEDecoder and Sequence, each a Hugging Face decode_chain (tokens in, tokens out; the
// final text is the concatenation).
//
// Contract: decode_chain() is const and thread-safe and leaves valid UTF-8 (invalid bytes become
// U+FFFD by the HF rule of each decoder). make_decoder() throws kUnsupported for other types
// (naming origin and JSON path) and kFormat for malformed fields.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "io/tokenizer/json_util.h"

namespace calq::io::tok {

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

std::unique_ptr<Decoder> make_decoder(const Json& value, const JsonPath& at);

}  // namespace calq::io::tok
