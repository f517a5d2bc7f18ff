// `calq quantize`: a whole model to a GGUF file with a named mix (first form: GGUF in, GGUF out,
// llama.cpp's mixes, optional imatrix).
//
// Flag parsing (QuantizeFlags, register_quantize) and the work (run_quantize) are kept apart so
// later forms (Hugging Face input, calibration, methods) add flags and steps without touching the
// GGUF path.
#include <fmt/format.h>

#include <filesystem>
#include <optional>

#include "cli/commands.h"
#include "cli/model_paths.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "io/gguf.h"
#include "pipeline/gguf_quantize.h"
#include "pipeline/imatrix.h"
#include "pipeline/mix.h"

namespace calq::cli {
namespace {

struct QuantizeFlags {
  std::string model;
  std::string out;
  std::string type;
  std::string imatrix;
  size_t threads = 0;
  bool force = false;
  bool quiet = false;
};

std::string type_name(uint32_t type) {
  const io::GgmlTypeInfo* info = io::ggml_type_info(type);
  return info != nullptr ? std::string(info->name) : fmt::format("type {}", type);
}

std::string shape_text(const std::vector<int64_t>& ne) {
  std::string s;
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return "[" + s + "]";
}

// Everything checkable before reading tensors: the mix name, the input kind, the output path.
void check_paths(const QuantizeFlags& f, const ModelLocation& loc) {
  if (loc.format != ModelFormat::kGguf) {
    fail(ErrorKind::kUnsupported,
         "{}: Hugging Face folders are not yet accepted by calq quantize; give a GGUF file (F32/F16/BF16)", f.model);
  }
  const std::filesystem::path out(f.out);
  std::error_code ec;
  if (std::filesystem::exists(out, ec)) {
    if (std::filesystem::equivalent(out, loc.path, ec)) {
      fail(ErrorKind::kInvalidArgument, "{}: --out is the input model; choose another file", f.out);
    }
    if (!f.force) fail(ErrorKind::kInvalidArgument, "{}: output file exists; pass --force to overwrite it", f.out);
    if (std::filesystem::is_directory(out, ec)) fail(ErrorKind::kInvalidArgument, "{}: --out is a directory", f.out);
  }
  const std::filesystem::path dir = out.has_parent_path() ? out.parent_path() : std::filesystem::path(".");
  if (!std::filesystem::is_directory(dir, ec)) {
    fail(ErrorKind::kIo, "{}: the output folder {} does not exist", f.out, dir.string());
  }
}

void run_quantize(const QuantizeFlags& f) {
  const pipeline::QuantMix& mix = pipeline::mix_by_name(f.type);
  const ModelLocation loc = resolve_model(f.model);
  check_paths(f, loc);
  std::optional<pipeline::Imatrix> imatrix;
  if (!f.imatrix.empty()) imatrix.emplace(pipeline::read_imatrix(f.imatrix));

  ThreadPool pool(f.threads);
  const io::GgufFile in = io::GgufFile::open(loc.path);
  if (!f.quiet) {
    fmt::print(stderr, "calq quantize: {} -> {} ({}, {} threads{})\n", f.model, f.out, mix.name, pool.num_threads(),
               imatrix ? fmt::format(", imatrix {} with {} entries", f.imatrix, imatrix->entries.size()) : "");
  }
  const size_t width = std::to_string(in.tensors().size()).size();
  auto on_tensor = [&](const pipeline::TensorDone& d) {
    if (f.quiet) return;
    const pipeline::TensorPlan& p = *d.plan;
    std::string what = p.choice.quantize ? fmt::format("{} -> {}", type_name(p.from_type), type_name(p.choice.type))
                                         : fmt::format("{} (copied)", type_name(p.from_type));
    if (p.choice.fell_back) what += " (fallback: row length)";
    if (d.used_importance) what += " +imatrix";
    fmt::print(stderr, "[{:>{}}/{}] {:<36} {:<18} {:<24} {:7.3f} s\n", d.done, width, d.total, p.name,
               shape_text(p.ne), what, d.seconds);
  };
  const pipeline::QuantizeGgufResult r = pipeline::quantize_gguf(
      in, f.out, {.mix = &mix, .imatrix = imatrix ? &*imatrix : nullptr, .on_tensor = on_tensor}, pool);

  if (imatrix && r.n_with_importance < r.n_quantized) {
    fmt::print(stderr, "calq quantize: warning: {} of {} quantized tensors had no imatrix entry\n",
               r.n_quantized - r.n_with_importance, r.n_quantized);
  }
  if (r.n_fallback > 0) {
    fmt::print(stderr, "calq quantize: {} tensors fell back to another type (row length not a multiple of the block)\n",
               r.n_fallback);
  }
  constexpr double kMiB = 1024.0 * 1024.0;
  uint64_t elements = 0;
  for (const auto& t : in.tensors()) elements += static_cast<uint64_t>(t.element_count());
  fmt::print("wrote {}: {} ({}), {} tensors, {} quantized{}\n", f.out, mix.name, mix.description, r.plan.size(),
             r.n_quantized, imatrix ? fmt::format(" ({} with imatrix)", r.n_with_importance) : "");
  fmt::print("size  {:.2f} MiB -> {:.2f} MiB ({:.2f} bits per weight)\n", r.bytes_in / kMiB, r.bytes_out / kMiB,
             elements > 0 ? 8.0 * static_cast<double>(r.bytes_out) / static_cast<double>(elements) : 0.0);
  fmt::print("time  {:.2f} s convert, {:.2f} s encode, {:.2f} s write\n", r.seconds_convert, r.seconds_encode,
             r.seconds_write);
}

}  // namespace

void register_quantize(CLI::App& app) {
  auto flags = std::make_shared<QuantizeFlags>();
  CLI::App* cmd = app.add_subcommand("quantize", "Quantize a model into a GGUF file");
  cmd->add_option("--model", flags->model, "GGUF model file (F32/F16/BF16 tensors)")->required();
  cmd->add_option("--out", flags->out, "Output GGUF file")->required();
  cmd->add_option("--type", flags->type,
                  "Mix: llama.cpp's q2_k, q3_k_s/m/l, q4_k_s/m, q5_k_s/m, q6_k, q8_0, or one type for every "
                  "weight (q4_0, q4_1, q5_0, q5_1, q3_k, q4_k, q5_k, iq4_nl, iq4_xs, f16, bf16, pure-<type>)")
      ->required();
  cmd->add_option("--imatrix", flags->imatrix, "Importance matrix (llama.cpp's imatrix.dat or GGUF imatrix)");
  cmd->add_option("--threads", flags->threads, "Worker threads (0 = all cores)")->check(CLI::Range(0, 1024));
  cmd->add_flag("--force", flags->force, "Overwrite an existing output file");
  cmd->add_flag("--quiet,-q", flags->quiet, "No progress output on stderr");
  cmd->callback([flags] { run_quantize(*flags); });
}

}  // namespace calq::cli
