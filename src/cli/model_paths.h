// Resolving what the user passed as --model.
#pragma once

#include <filesystem>

namespace calq::cli {

// Checks that `path` is a Hugging Face model folder (has config.json); throws calq::Error
// naming the path and saying what was expected otherwise.
std::filesystem::path require_hf_folder(const std::filesystem::path& path);

}  // namespace calq::cli
