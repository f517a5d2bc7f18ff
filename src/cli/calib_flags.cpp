#include "cli/calib_flags.h"

#include <fmt/format.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"
#include "model/gguf_model.h"

namespace calq::cli {

void add_calib_flags(CLI::App* cmd, CalibFlags& f) {
  cmd->add_option("--calib", f.calib,
                  "Calibration text: plain text (documents separated by blank lines) or JSONL with a \"text\" field");
  cmd->add_option("--samples", f.samples, "Calibration samples (sequences) to draw; 128-512 advised")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->add_option("--seq-len", f.seq_len, "Tokens per calibration sample")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{2}, int64_t{1} << 20));
  cmd->add_option("--seed", f.seed, "Seed of the calibration sample draw")->capture_default_str();
  cmd->add_option("--tokenizer", f.tokenizer,
                  "tokenizer.json to tokenize the calibration text with instead of the model's own");
}

LoadedModel load_model_for_calibration(const std::string& path, ThreadPool& pool) {
  LoadedModel m{.location = resolve_model(path)};
  if (m.location.format == ModelFormat::kGguf) {
    m.gguf = std::make_shared<const io::GgufFile>(io::GgufFile::open(m.location.path));
    m.model = model::load_gguf_model(m.gguf, pool);
  } else {
    m.model = model::load_hf_model(m.location.path, pool, {.keep_source_dtype = true});
  }
  return m;
}

io::CalibrationSet load_calibration(const CalibFlags& f, const io::Tokenizer& tokenizer,
                                    const model::ModelConfig& config, bool quiet) {
  if (f.samples < 128 && !quiet) {
    fmt::print(stderr,
               "calq: warning: --samples {} is below 128; GPTQ/AWQ-style calibration is usually done with 128-512 "
               "samples, and fewer give noisier statistics\n",
               f.samples);
  }
  io::CalibrationSet set = io::load_calibration_set(
      f.calib, tokenizer,
      {.samples = f.samples, .seq_len = f.seq_len, .seed = f.seed, .separator = config.eos_token_id});
  for (const auto& s : set.samples) {
    for (const int32_t id : s) {
      if (id < 0 || id >= config.vocab_size) {
        fail(ErrorKind::kInvalidArgument, "{}: token id {} is outside the model's vocabulary of {} (wrong --tokenizer?)",
             f.calib, id, config.vocab_size);
      }
    }
  }
  return set;
}

double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

void check_output_path(const std::string& out_text, const std::filesystem::path& input, bool force) {
  const std::filesystem::path out(out_text);
  std::error_code ec;
  if (std::filesystem::exists(out, ec)) {
    if (std::filesystem::is_directory(out, ec)) fail(ErrorKind::kInvalidArgument, "{}: --out is a folder", out_text);
    if (std::filesystem::equivalent(out, input, ec)) {
      fail(ErrorKind::kInvalidArgument, "{}: --out is the input; choose another file", out_text);
    }
    if (!force) fail(ErrorKind::kInvalidArgument, "{}: output file exists; pass --force to overwrite it", out_text);
  }
  const std::filesystem::path dir = out.has_parent_path() ? out.parent_path() : std::filesystem::path(".");
  if (!std::filesystem::is_directory(dir, ec)) {
    fail(ErrorKind::kIo, "{}: the output folder {} does not exist", out_text, dir.string());
  }
  // Probe by creating a file: access(2) says yes to root even where creating fails (sysfs, ...).
  const std::filesystem::path probe = dir / fmt::format(".calq-probe-{}", getpid());
  const int fd = open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd < 0) {
    fail(ErrorKind::kIo, "{}: the output folder {} is not writable ({})", out_text, dir.string(), std::strerror(errno));
  }
  close(fd);
  std::filesystem::remove(probe, ec);
}

}  // namespace calq::cli
