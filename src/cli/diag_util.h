// Steps shared by the diagnostic commands (`calq sensitivity`, `calq bisect`, `calq calib-check`):
// the evaluation text as token ids, output paths checked before the long work, atomic writes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/tokenizer.h"

#include "api/model_source.h"

namespace calq::cli {

using api::load_eval_ids;

// An output file's folder must exist (checked before any work); "" passes.
void check_output_folder(const std::string& path);

// Writes `text` atomically (temporary file + rename).
void write_text_atomic(const std::string& path, const std::string& text);

}  // namespace calq::cli
