// Post-processors of tokenizer.json ("post_processor"), applied to a single sequence's ids when
// encode() is asked to add special tokens: TemplateProcessing (the "single" template),
// RobertaProcessing and BertProcessing (<cls> $A <sep>), ByteLevel (nothing to do for ids) and
// Sequence. Pair templates are parsed no further: calq encodes single sequences only.
//
// Contract: process() is const and thread-safe. make_post_processor() throws kUnsupported for
// other types (naming origin and JSON path) and kFormat for malformed fields.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "io/tokenizer/json_util.h"

namespace calq::io::tok {

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  virtual void process(std::vector<int32_t>& ids) const = 0;
};

std::unique_ptr<PostProcessor> make_post_processor(const Json& value, const JsonPath& at);

}  // namespace calq::io::tok
