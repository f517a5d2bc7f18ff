// The listing of a GGUF file (calq::inspect, `calq inspect FILE.gguf`): the header, every metadata key and every tensor, read
// with io::GgufFile (headers only, no tensor data is touched).
//
// Contract: tensors are listed in file order with their ggml type name ("F32", "Q4_K", ...) and
// their dimensions in ggml order (ne[0] first, the contiguous dimension: token_embd.weight of a
// 512-wide model with 16384 tokens is [512, 16384]); the JSON also gives the row-major shape (the
// reverse). Metadata scalars are shown with their value (long strings cut, bytes that are not
// printable ASCII escaped), arrays by element type and length with their first elements.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "io/gguf.h"

namespace calq::api {

std::string gguf_listing_text(const io::GgufFile& file);
nlohmann::ordered_json gguf_listing_json(const io::GgufFile& file);

// One-line summary of a metadata value, as the table shows it.
std::string gguf_value_summary(const io::GgufValue& value);

}  // namespace calq::api
