// Resolving what the user passed as --model.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "io/gguf.h"
#include "io/tokenizer.h"

namespace calq::cli {

enum class ModelFormat { kHfFolder, kGguf };

struct ModelLocation {
  std::filesystem::path path;
  ModelFormat format;
};
std::string_view format_name(ModelFormat format);  // "hf", "gguf"

// A folder with config.json is a Hugging Face model; a file starting with the GGUF magic is a
// GGUF model. Anything else throws calq::Error naming the path and saying what was expected.
ModelLocation resolve_model(const std::filesystem::path& path);

// Checks that `path` is a Hugging Face model folder (has config.json); throws calq::Error
// naming the path and saying what was expected otherwise.
std::filesystem::path require_hf_folder(const std::filesystem::path& path);

// The tokenizer a model is run with: `override_path` (a tokenizer.json) when not empty, else the
// vocabulary embedded in `gguf` (the opened file of a GGUF model; llama.cpp's segmentation), else
// tokenizer.json beside a Hugging Face model. `source` receives a description for reports.
io::Tokenizer load_model_tokenizer(const ModelLocation& loc, const io::GgufFile* gguf, const std::string& override_path,
                                   std::string& source);

}  // namespace calq::cli
