#include "cli/model_paths.h"

#include <array>
#include <fstream>

#include "core/error.h"

namespace calq::cli {
namespace {

bool has_gguf_magic(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::array<char, 4> magic{};
  return in.read(magic.data(), magic.size()) && std::string_view(magic.data(), magic.size()) == "GGUF";
}

}  // namespace

std::string_view format_name(ModelFormat format) { return format == ModelFormat::kGguf ? "gguf" : "hf"; }

ModelLocation resolve_model(const std::filesystem::path& path) {
  if (!std::filesystem::exists(path)) fail(ErrorKind::kNotFound, "{}: no such file or folder", path.string());
  if (std::filesystem::is_directory(path)) return {require_hf_folder(path), ModelFormat::kHfFolder};
  if (!has_gguf_magic(path)) {
    fail(ErrorKind::kUnsupported,
         "{}: expected a Hugging Face model folder (config.json + *.safetensors) or a GGUF file (no GGUF magic)",
         path.string());
  }
  return {path, ModelFormat::kGguf};
}

std::filesystem::path require_hf_folder(const std::filesystem::path& path) {
  if (!std::filesystem::exists(path)) fail(ErrorKind::kNotFound, "{}: no such file or folder", path.string());
  if (!std::filesystem::is_directory(path)) {
    fail(ErrorKind::kUnsupported, "{}: expected a Hugging Face model folder (config.json + *.safetensors)",
         path.string());
  }
  if (!std::filesystem::exists(path / "config.json")) {
    fail(ErrorKind::kNotFound, "{}: config.json not found (is this a Hugging Face model folder?)",
         (path / "config.json").string());
  }
  return path;
}

io::Tokenizer load_model_tokenizer(const ModelLocation& loc, const io::GgufFile* gguf, const std::string& override_path,
                                   std::string& source) {
  if (!override_path.empty()) {
    source = override_path;
    return io::Tokenizer::from_file(override_path);
  }
  if (gguf != nullptr) {
    source = loc.path.string() + " (GGUF metadata)";
    return io::Tokenizer::from_gguf(*gguf);
  }
  source = (loc.path / "tokenizer.json").string();
  return io::Tokenizer::from_file(loc.path / "tokenizer.json");
}

}  // namespace calq::cli
