#include "cli/model_paths.h"

#include "core/error.h"

namespace calq::cli {

std::filesystem::path require_hf_folder(const std::filesystem::path& path) {
  if (!std::filesystem::exists(path)) fail(ErrorKind::kNotFound, "{}: no such file or folder", path.string());
  if (!std::filesystem::is_directory(path)) {
    fail(ErrorKind::kUnsupported,
         "{}: expected a Hugging Face model folder (config.json + *.safetensors); GGUF input is not supported yet",
         path.string());
  }
  if (!std::filesystem::exists(path / "config.json")) {
    fail(ErrorKind::kNotFound, "{}: config.json not found (is this a Hugging Face model folder?)",
         (path / "config.json").string());
  }
  return path;
}

}  // namespace calq::cli
