#include "cli/diag_util.h"

#include <filesystem>
#include <span>

#include "core/error.h"
#include "core/mapped_file.h"

namespace calq::cli {

void check_output_folder(const std::string& path) {
  if (path.empty()) return;
  const std::filesystem::path p(path);
  const std::filesystem::path dir = p.has_parent_path() ? p.parent_path() : std::filesystem::path(".");
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    fail(ErrorKind::kIo, "{}: the output folder {} does not exist", path, dir.string());
  }
  if (std::filesystem::is_directory(p, ec)) fail(ErrorKind::kInvalidArgument, "{}: is a folder, not a file", path);
}

void write_text_atomic(const std::string& path, const std::string& text) {
  write_file_atomic(path, std::as_bytes(std::span(text.data(), text.size())));
}

}  // namespace calq::cli
