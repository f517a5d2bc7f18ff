#include "cli/quantize_target.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <map>

#include "core/error.h"
#include "core/mapped_file.h"
#include "eval/compare.h"
#include "model/gguf_model.h"

namespace calq::cli {

void add_target_flags(CLI::App* cmd, TargetFlags& f) {
  cmd->add_option("--target-bpw", f.target_bpw,
                  "Bit allocation: choose a format per tensor from --candidates minimizing the predicted KLD "
                  "(--sensitivity) with the whole file at most this many bits per weight");
  cmd->add_option("--candidates", f.candidates, "--target-bpw: candidate formats, e.g. q3_k,q4_k,q5_k,q6_k,q8_0");
  cmd->add_option("--sensitivity", f.sensitivity,
                  "--target-bpw: sensitivity map JSON from calq sensitivity (per-tensor KLD of every candidate)");
  cmd->add_option("--sensitivity-text", f.sensitivity_text,
                  "--target-bpw without --sensitivity: measure the map now (as calq sensitivity --format CANDIDATES "
                  "with this --method, --stats/--calib and --observer) on this text; use calibration text, not the "
                  "text the result will be judged on");
  cmd->add_option("--sensitivity-windows", f.sensitivity_windows, "--sensitivity-text: windows of --sensitivity-ctx tokens")
      ->capture_default_str();
  cmd->add_option("--sensitivity-ctx", f.sensitivity_ctx, "--sensitivity-text: tokens per window")
      ->capture_default_str();
  cmd->add_option("--verify-text", f.verify_text,
                  "--target-bpw: after writing, measure KL(full precision || output) on this text and print it "
                  "beside the prediction");
  cmd->add_option("--verify-windows", f.verify_windows, "--verify-text: windows (default: the map's; 0 = all)");
  cmd->add_option("--verify-ctx", f.verify_ctx, "--verify-text: tokens per window (default: the map's ctx)");
}

void check_target_flags(const TargetFlags& f) {
  if (!f.active()) {
    const char* stray = !f.candidates.empty()         ? "--candidates"
                        : !f.sensitivity.empty()        ? "--sensitivity"
                        : !f.sensitivity_text.empty()   ? "--sensitivity-text"
                        : !f.verify_text.empty()        ? "--verify-text"
                                                        : nullptr;
    if (stray != nullptr) fail(ErrorKind::kInvalidArgument, "{} goes with --target-bpw", stray);
    return;
  }
  if (f.candidates.empty()) {
    fail(ErrorKind::kInvalidArgument, "--target-bpw needs --candidates, e.g. --candidates q3_k,q4_k,q5_k,q6_k,q8_0");
  }
  if (f.sensitivity.empty() == f.sensitivity_text.empty()) {
    fail(ErrorKind::kInvalidArgument,
         "--target-bpw needs one of --sensitivity FILE (the per-tensor KLD map written by `calq sensitivity --format "
         "{}`) or --sensitivity-text TEXT (measure that map now)",
         f.candidates);
  }
  if (f.sensitivity_windows < 1) fail(ErrorKind::kInvalidArgument, "--sensitivity-windows must be >= 1");
  if (f.sensitivity_ctx < 2) fail(ErrorKind::kInvalidArgument, "--sensitivity-ctx must be >= 2");
  std::error_code ec0;
  if (!f.sensitivity_text.empty() && !std::filesystem::is_regular_file(f.sensitivity_text, ec0)) {
    fail(ErrorKind::kIo, "{}: --sensitivity-text file not found", f.sensitivity_text);
  }
  if (f.verify_text.empty() && (f.verify_windows != -1 || f.verify_ctx != 0)) {
    fail(ErrorKind::kInvalidArgument, "--verify-windows and --verify-ctx go with --verify-text");
  }
  if (f.verify_windows < -1 || f.verify_ctx < 0 || f.verify_ctx == 1) {
    fail(ErrorKind::kInvalidArgument, "--verify-windows must be ≥ 0 and --verify-ctx ≥ 2");
  }
  std::error_code ec;
  if (!f.verify_text.empty() && !std::filesystem::is_regular_file(f.verify_text, ec)) {
    fail(ErrorKind::kIo, "{}: --verify-text file not found", f.verify_text);
  }
}

std::vector<const Format*> parse_candidates(const std::string& list) {
  std::vector<const Format*> r;
  size_t start = 0;
  while (start <= list.size()) {
    size_t end = list.find(',', start);
    if (end == std::string::npos) end = list.size();
    std::string name = list.substr(start, end - start);
    name.erase(0, name.find_first_not_of(' '));
    name.erase(name.find_last_not_of(' ') + 1);
    if (name.empty()) fail(ErrorKind::kInvalidArgument, "--candidates '{}': empty format name", list);
    const Format* f = &format_by_name(name);
    if (std::find(r.begin(), r.end(), f) != r.end()) {
      fail(ErrorKind::kInvalidArgument, "--candidates '{}': {} is listed twice", list, name);
    }
    r.push_back(f);
    start = end + 1;
  }
  return r;
}

std::string allocation_report(const pipeline::TargetAllocation& a, const pipeline::SensitivityFile& map,
                              double target_bpw) {
  size_t width = 6;
  for (const auto& t : a.tensors) width = std::max(width, t.name.size());
  std::string s = fmt::format("allocation  target {} bits per weight: {} bytes for {} parameters; {} bytes fixed; "
                              "exact DP over {} cells of {} bytes\n",
                              target_bpw, a.budget_bytes, a.parameter_count, a.fixed_bytes, a.cells, a.granule);
  s += fmt::format("  {:<{}}  {:<14}  {:>12}  {:>13}\n", "tensor", width, "format", "bytes", "predicted KLD");
  std::map<std::string, size_t> count;
  for (const auto& t : a.tensors) {
    s += fmt::format("  {:<{}}  {:<14}  {:>12}  {:>13.6g}\n", t.name, width, t.format->name(), t.bytes, t.kld);
    ++count[t.format->name()];
  }
  std::string mix;
  for (const auto& [name, n] : count) mix += fmt::format("{}{} x {}", mix.empty() ? "" : ", ", n, name);
  s += fmt::format("allocation  {} tensors ({}), {} bytes\n", a.tensors.size(), mix, a.allocated_bytes);
  s += fmt::format("predicted   KLD {:.6g} nats/token (allocated {:.6g} + fixed {:.6g} from {} fixed tensors in {}); "
                   "{:.4f} bits per weight\n",
                   a.predicted_kld(), a.allocated_kld, a.fixed_kld, a.fixed_in_map, map.origin, a.predicted_bpw());
  return s;
}

VerifyPlan plan_verify(const TargetFlags& f, const pipeline::SensitivityFile& map, const io::Tokenizer& tokenizer) {
  VerifyPlan p;
  p.ctx = f.verify_ctx > 0 ? f.verify_ctx : map.ctx;
  p.windows = f.verify_windows >= 0 ? f.verify_windows : map.windows;
  p.ids = tokenizer.encode(read_text_file(f.verify_text), /*add_special_tokens=*/false);
  if (static_cast<int64_t>(p.ids.size()) < p.ctx) {
    fail(ErrorKind::kInvalidArgument, "{}: {} tokens, fewer than one window of --verify-ctx {}", f.verify_text,
         p.ids.size(), p.ctx);
  }
  return p;
}

void verify_allocation(const VerifyPlan& p, const model::Model& ref, const std::string& out,
                       const pipeline::TargetAllocation& a, ThreadPool& pool) {
  // The file as written, not the model in memory: what a user will run.
  const model::Model q = model::load_gguf_model(std::filesystem::path(out), pool);
  const model::Model* candidates[] = {&q};
  const eval::CompareReport rep =
      eval::compare_models(ref, candidates, p.ids, {.ctx = p.ctx, .max_windows = p.windows}, pool);
  const eval::CompareResult& r = rep.candidates.at(0);
  const double predicted = a.predicted_kld();
  fmt::print("verify      {} windows x {} tokens: measured KLD {:.6g} [{:.6g}, {:.6g}] vs predicted {:.6g} "
             "(measured/predicted {:.3f}); PPL {:.4f} vs {:.4f} full precision, top-1 agreement {:.2f} %; "
             "{:.4f} bits per weight\n",
             r.n_windows, r.ctx, r.kld_mean, r.kld_mean_ci.lo, r.kld_mean_ci.hi, predicted,
             predicted > 0 ? r.kld_mean / predicted : 0.0, r.ppl, r.ppl_ref, 100 * r.top1_agreement,
             q.bits_per_weight());
}

}  // namespace calq::cli
