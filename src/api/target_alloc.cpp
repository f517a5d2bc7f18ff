#include "api/target_alloc.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <map>

#include "core/error.h"
#include "core/mapped_file.h"
#include "eval/compare.h"
#include "model/gguf_model.h"
#include "model/model.h"

namespace calq::api {

void check_target_options(const TargetOptions& t) {
  if (t.bits_per_weight <= 0) {
    if (!t.candidates.empty() || !t.sensitivity.empty() || !t.sensitivity_text.empty() || !t.verify_text.empty()) {
      fail(ErrorKind::kInvalidArgument,
           "target candidates, sensitivity and verify_text go with a target bits_per_weight above 0");
    }
    return;
  }
  if (t.candidates.empty()) {
    fail(ErrorKind::kInvalidArgument, "a target bits_per_weight needs candidates, e.g. q3_k, q4_k, q5_k, q6_k, q8_0");
  }
  if (t.sensitivity.empty() == t.sensitivity_text.empty()) {
    fail(ErrorKind::kInvalidArgument,
         "a target bits_per_weight needs one of sensitivity (a map file written by calq sensitivity) or "
         "sensitivity_text (measure the map now)");
  }
  if (t.sensitivity_windows < 1) fail(ErrorKind::kInvalidArgument, "target sensitivity_windows must be >= 1");
  if (t.sensitivity_ctx < 2) fail(ErrorKind::kInvalidArgument, "target sensitivity_ctx must be >= 2");
  std::error_code ec;
  if (!t.sensitivity_text.empty() && !std::filesystem::is_regular_file(t.sensitivity_text, ec)) {
    fail(ErrorKind::kIo, "{}: sensitivity text file not found", t.sensitivity_text);
  }
  if (t.verify_text.empty() && (t.verify_windows != -1 || t.verify_ctx != 0)) {
    fail(ErrorKind::kInvalidArgument, "target verify_windows and verify_ctx go with verify_text");
  }
  if (t.verify_windows < -1 || t.verify_ctx < 0 || t.verify_ctx == 1) {
    fail(ErrorKind::kInvalidArgument, "target verify_windows must be >= 0 and verify_ctx >= 2");
  }
  if (!t.verify_text.empty() && !std::filesystem::is_regular_file(t.verify_text, ec)) {
    fail(ErrorKind::kIo, "{}: verify text file not found", t.verify_text);
  }
}

std::vector<const Format*> parse_candidates(const std::vector<std::string>& names) {
  std::vector<const Format*> r;
  for (std::string name : names) {
    name.erase(0, name.find_first_not_of(' '));
    name.erase(name.find_last_not_of(' ') + 1);
    if (name.empty()) fail(ErrorKind::kInvalidArgument, "target candidates: empty format name");
    const Format* f = &format_by_name(name);
    if (std::find(r.begin(), r.end(), f) != r.end()) {
      fail(ErrorKind::kInvalidArgument, "target candidates: {} is listed twice", name);
    }
    r.push_back(f);
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

VerifyPlan plan_verify(const TargetOptions& f, const pipeline::SensitivityFile& map, const io::Tokenizer& tokenizer) {
  VerifyPlan p;
  p.ctx = f.verify_ctx > 0 ? f.verify_ctx : map.ctx;
  p.windows = f.verify_windows >= 0 ? f.verify_windows : map.windows;
  p.ids = tokenizer.encode(read_text_file(f.verify_text), /*add_special_tokens=*/false);
  if (static_cast<int64_t>(p.ids.size()) < p.ctx) {
    fail(ErrorKind::kInvalidArgument, "{}: {} tokens, fewer than one window of verify ctx {}", f.verify_text,
         p.ids.size(), p.ctx);
  }
  return p;
}

VerifyReport verify_allocation(const VerifyPlan& p, const model::Model& ref, const std::string& out,
                       const pipeline::TargetAllocation& a, ThreadPool& pool) {
  // The file as written, not the model in memory: what a user will run.
  // On the fast kernels, as the sensitivity map that predicted the KLD was measured.
  model::Model q = model::load_gguf_model(std::filesystem::path(out), pool);
  model::set_fast_kernels(q, true);
  const model::Model* candidates[] = {&q};
  const eval::CompareReport rep =
      eval::compare_models(ref, candidates, p.ids, {.ctx = p.ctx, .max_windows = p.windows}, pool);
  const eval::CompareResult& r = rep.candidates.at(0);
  const double predicted = a.predicted_kld();
  return {.windows = r.n_windows, .ctx = r.ctx, .predicted_kld = predicted, .measured_kld = r.kld_mean,
          .measured_kld_lo = r.kld_mean_ci.lo, .measured_kld_hi = r.kld_mean_ci.hi,
          .text = fmt::format("verify      {} windows x {} tokens: measured KLD {:.6g} [{:.6g}, {:.6g}] vs predicted "
                              "{:.6g} (measured/predicted {:.3f}); PPL {:.4f} vs {:.4f} full precision, top-1 "
                              "agreement {:.2f} %; {:.4f} bits per weight",
                              r.n_windows, r.ctx, r.kld_mean, r.kld_mean_ci.lo, r.kld_mean_ci.hi, predicted,
                              predicted > 0 ? r.kld_mean / predicted : 0.0, r.ppl, r.ppl_ref, 100 * r.top1_agreement,
                              q.bits_per_weight())};
}

}  // namespace calq::api
