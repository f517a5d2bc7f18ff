#include "api/model_source.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <span>

#include "core/error.h"
#include "core/mapped_file.h"
#include "model/gguf_model.h"
#include "model/kv_cache.h"

namespace calq::api {
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

LoadedModel load_model(const std::string& path, ThreadPool& pool, const LoadOptions& options) {
  LoadedModel m{.arg = path, .location = resolve_model(path), .gguf = nullptr, .model = {}};
  if (m.location.format == ModelFormat::kGguf) {
    m.gguf = std::make_shared<const io::GgufFile>(io::GgufFile::open(m.location.path));
    m.model = model::load_gguf_model(m.gguf, pool, {.keep_source_dtype = options.keep_source_dtype});
  } else {
    m.model = model::load_hf_model(m.location.path, pool, {.keep_source_dtype = options.keep_source_dtype});
  }
  if (options.kv_cache != nullptr) model::check_kv_cache_format(*options.kv_cache, m.model.config);
  m.model.config.kv_cache = options.kv_cache;
  return m;
}

void check_output_path(const std::string& out_text, const std::filesystem::path& input, bool force) {
  const std::filesystem::path out(out_text);
  std::error_code ec;
  if (std::filesystem::exists(out, ec) && !std::filesystem::is_directory(out, ec)) {
    if (std::filesystem::equivalent(out, input, ec)) {
      fail(ErrorKind::kInvalidArgument, "{}: the output is the input; choose another file", out_text);
    }
    if (!force) fail(ErrorKind::kInvalidArgument, "{}: output file exists; overwriting it needs the force option", out_text);
  }
  check_output_folder(out_text);
}

void check_output_folder(const std::string& path) {
  if (path.empty()) return;
  const std::filesystem::path p(path);
  std::error_code ec;
  if (std::filesystem::is_directory(p, ec)) fail(ErrorKind::kInvalidArgument, "{}: the output is a folder", path);
  const std::filesystem::path dir = p.has_parent_path() ? p.parent_path() : std::filesystem::path(".");
  if (!std::filesystem::is_directory(dir, ec)) {
    fail(ErrorKind::kIo, "{}: the output folder {} does not exist", path, dir.string());
  }
  // Probe by creating a file: access(2) says yes to root even where creating fails (sysfs, ...).
  const std::filesystem::path probe = dir / fmt::format(".calq-probe-{}", getpid());
  const int fd = open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd < 0) {
    fail(ErrorKind::kIo, "{}: the output folder {} is not writable ({})", path, dir.string(), std::strerror(errno));
  }
  close(fd);
  std::filesystem::remove(probe, ec);
}

void write_text_atomic(const std::string& path, const std::string& text) {
  write_file_atomic(path, std::as_bytes(std::span(text.data(), text.size())));
}

std::vector<int32_t> load_eval_ids(const std::string& path, const io::Tokenizer& tokenizer) {
  const std::string text = read_text_file(path);
  if (text.find_first_not_of(" \t\r\n") == std::string::npos) {
    fail(ErrorKind::kInvalidArgument, "{}: the evaluation text is empty", path);
  }
  return tokenizer.encode(text, /*add_special_tokens=*/false);
}

void check_disk_space(const std::filesystem::path& out, uint64_t need, std::string_view what) {
  std::filesystem::path folder = std::filesystem::absolute(out).parent_path();
  std::error_code ec;
  const std::filesystem::space_info s = std::filesystem::space(folder, ec);
  if (ec) return;  // unknown: the writes report a full disk themselves
  if (s.available < need) {
    constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
    fail(ErrorKind::kIo, "{}: {:.2f} GiB free, but {} needs about {:.2f} GiB; nothing was done", folder.string(),
         static_cast<double>(s.available) / kGiB, what, static_cast<double>(need) / kGiB);
  }
}

double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

}  // namespace calq::api
