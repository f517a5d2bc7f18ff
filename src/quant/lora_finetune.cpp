#include "quant/lora_finetune.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>

#include "core/error.h"
#include "grad/model_grad.h"
#include "grad/optim.h"
#include "quant/qat_trainable.h"

namespace calq::quant {
namespace {

using Params = grad::ModelParams<float>;
using model::TensorRole;

struct TargetName {
  TensorRole role;
  const char* shorter;
  const char* peft;
};
constexpr TargetName kTargetNames[] = {
    {TensorRole::kAttnQ, "q", "q_proj"},       {TensorRole::kAttnK, "k", "k_proj"},
    {TensorRole::kAttnV, "v", "v_proj"},       {TensorRole::kAttnOut, "o", "o_proj"},
    {TensorRole::kMlpGate, "gate", "gate_proj"}, {TensorRole::kMlpUp, "up", "up_proj"},
    {TensorRole::kMlpDown, "down", "down_proj"},
};

void check_options(const LoraFinetuneOptions& o) {
  if (o.rank < 1) fail(ErrorKind::kInvalidArgument, "option 'rank' must be at least 1, got {}", o.rank);
  if (!(o.alpha > 0) || !std::isfinite(o.alpha))
    fail(ErrorKind::kInvalidArgument, "option 'alpha' must be a finite number > 0, got {}", o.alpha);
  if (!(o.dropout >= 0 && o.dropout < 1))
    fail(ErrorKind::kInvalidArgument, "option 'dropout' must be in [0, 1), got {}", o.dropout);
  if (o.targets.empty()) fail(ErrorKind::kInvalidArgument, "option 'targets' names no linear");
  if (o.batch < 1) fail(ErrorKind::kInvalidArgument, "option 'batch' must be at least 1, got {}", o.batch);
  if (o.seq_len < 2) fail(ErrorKind::kInvalidArgument, "option 'seq_len' must be at least 2, got {}", o.seq_len);
  if (o.steps < 0) fail(ErrorKind::kInvalidArgument, "option 'steps' must be >= 0, got {}", o.steps);
  if (o.epochs < 1) fail(ErrorKind::kInvalidArgument, "option 'epochs' must be at least 1, got {}", o.epochs);
  if (!(o.warmup >= 0 && o.warmup <= 0.5))
    fail(ErrorKind::kInvalidArgument, "option 'warmup' must be in [0, 0.5], got {}", o.warmup);
  if (!(o.max_grad_norm >= 0) || !std::isfinite(o.max_grad_norm))
    fail(ErrorKind::kInvalidArgument, "option 'max_grad_norm' must be a finite number >= 0, got {}", o.max_grad_norm);
  if (o.eval_every < 0 || o.eval_windows < 0)
    fail(ErrorKind::kInvalidArgument, "options 'eval_every' and 'eval_windows' must be >= 0");
}

void check_shapes(const model::Model& m, const LoraFinetuneOptions& o) {
  if (m.has_adapters())
    fail(ErrorKind::kInvalidArgument, "the model already has LoRA adapters; train on a base without them");
  for (size_t l = 0; l < m.layers.size(); ++l) {
    for (const TensorRole role : o.targets) {
      const model::LinearWeight& w = m.layers[l].linear(role);
      const int64_t in = w.cols(), out = w.rows();
      if (o.rank > std::min(in, out))
        fail(ErrorKind::kInvalidArgument, "option 'rank' {} is larger than layer {} {} [{}, {}] allows (at most {})",
             o.rank, l, model::role_name(role), out, in, std::min(in, out));
    }
  }
}

// Windows of seq_len tokens (the tail dropped); fewer than one is an error naming `what`.
int64_t count_windows(std::span<const int32_t> ids, int64_t seq_len, const char* what) {
  const auto n = static_cast<int64_t>(ids.size());
  if (n < seq_len)
    fail(ErrorKind::kInvalidArgument, "the {} text has {} tokens, fewer than one window of seq_len {}", what, n,
         seq_len);
  return n / seq_len;
}

// A uniform double in [0, 1) from 53 raw bits (std::uniform_real_distribution's use of the engine
// is not specified).
double uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

// PEFT's start: A ~ U(±1/√in), B = 0.
void init_adapters(const model::Model& m, const LoraFinetuneOptions& o, Params& p) {
  std::mt19937_64 rng(o.seed ^ 0x4c6f5241ULL);  // "LoRA": a stream apart from the data order's
  for (size_t l = 0; l < m.layers.size(); ++l) {
    for (size_t s = 0; s < std::size(model::kLayerLinearRoles); ++s) {
      const TensorRole role = model::kLayerLinearRoles[s];
      if (std::find(o.targets.begin(), o.targets.end(), role) == o.targets.end()) continue;
      const model::LinearWeight& w = m.layers[l].linear(role);
      const int64_t in = w.cols(), out = w.rows();
      grad::LoraParams<float>& a = p.layers[l].lora[s];
      a.rank = o.rank;
      a.scale = static_cast<float>(o.alpha / static_cast<double>(o.rank));
      a.a.resize(static_cast<size_t>(o.rank * in));
      const double bound = 1.0 / std::sqrt(static_cast<double>(in));
      for (float& v : a.a) v = static_cast<float>((2.0 * uniform01(rng) - 1.0) * bound);
      a.b.assign(static_cast<size_t>(out * o.rank), 0.0f);
    }
  }
}

// Mean next-token cross-entropy over the first `windows` windows of ids, `batch` at a time.
double validation_loss(ThreadPool& pool, const model::ModelConfig& c, const Params& p, std::span<const int32_t> ids,
                       int64_t seq_len, int64_t windows, int64_t batch) {
  double sum = 0;
  for (int64_t w0 = 0; w0 < windows; w0 += batch) {
    const int64_t b = std::min(batch, windows - w0);
    const auto chunk = ids.subspan(static_cast<size_t>(w0 * seq_len), static_cast<size_t>(b * seq_len));
    sum += grad::model_loss<float>(pool, c, p, chunk, seq_len, {}) * static_cast<double>(b);
  }
  return sum / static_cast<double>(windows);
}

LoraFinetuneResult run(model::Model& m, std::span<const int32_t> train_ids, std::span<const int32_t> val_ids,
                       const LoraFinetuneOptions& o, ThreadPool& pool, const LoraProgressFn* progress) {
  check_options(o);
  check_shapes(m, o);
  const auto t0 = std::chrono::steady_clock::now();
  const auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  LoraFinetuneResult r;
  r.train_windows = count_windows(train_ids, o.seq_len, "training");
  const int64_t val_available = count_windows(val_ids, o.seq_len, "validation");
  r.val_windows = o.eval_windows == 0 ? val_available : std::min(o.eval_windows, val_available);
  const int64_t batch = std::min(o.batch, r.train_windows);
  const int64_t per_epoch = r.train_windows / batch;
  const int64_t total = o.steps > 0 ? o.steps : o.epochs * per_epoch;

  Params p = Params::from_model(m, pool);  // the base's dense copy (no adapters: checked above)
  init_adapters(m, o, p);
  Params g = Params::lora_grads(p);
  std::vector<grad::ParamGroup> groups;
  std::vector<size_t> sizes;
  {
    auto params = p.lora_tensors();
    auto grads = g.lora_tensors();
    for (size_t i = 0; i < params.size(); ++i) {
      groups.push_back({.name = params[i].name, .param = *params[i].values, .grad = *grads[i].values});
      sizes.push_back(params[i].values->size());
      r.adapter_parameters += static_cast<int64_t>(params[i].values->size());
    }
  }
  grad::AdamW adam({.lr = o.lr, .weight_decay = o.weight_decay}, sizes);
  const auto warmup_steps = std::min<int64_t>(static_cast<int64_t>(std::llround(o.warmup * static_cast<double>(total))),
                                              total - 1);
  const grad::CosineSchedule schedule({.lr = o.lr, .warmup_steps = warmup_steps, .total_steps = total});

  const auto validate = [&](int64_t step) {
    const double loss = validation_loss(pool, m.config, p, val_ids, o.seq_len, r.val_windows, batch);
    if (!std::isfinite(loss))
      fail(ErrorKind::kInvalidArgument, "the validation loss after step {} is {}", step, loss);
    r.validation.push_back({.step = step, .loss = loss, .ppl = std::exp(loss)});
    return loss;
  };
  validate(0);

  std::vector<int64_t> order(static_cast<size_t>(r.train_windows));
  for (int64_t i = 0; i < r.train_windows; ++i) order[static_cast<size_t>(i)] = i;
  std::mt19937_64 rng(o.seed);
  int64_t cursor = per_epoch * batch;  // a shuffle before the first step
  std::vector<int32_t> ids(static_cast<size_t>(batch * o.seq_len));
  const auto train_t0 = std::chrono::steady_clock::now();
  double validation_seconds = 0;
  for (int64_t step = 0; step < total; ++step) {
    if (cursor + batch > per_epoch * batch) {
      detail::shuffle(order, rng);
      cursor = 0;
    }
    for (int64_t k = 0; k < batch; ++k) {
      const auto src = train_ids.subspan(static_cast<size_t>(order[static_cast<size_t>(cursor + k)] * o.seq_len),
                                         static_cast<size_t>(o.seq_len));
      std::copy(src.begin(), src.end(), ids.begin() + k * o.seq_len);
    }
    cursor += batch;
    for (auto& t : g.lora_tensors()) std::fill(t.values->begin(), t.values->end(), 0.0f);
    const double loss = grad::model_forward_backward<float>(
        pool, m.config, p, ids, o.seq_len, {}, g, {.p = o.dropout, .seed = o.seed, .step = step});
    if (!std::isfinite(loss)) fail(ErrorKind::kInvalidArgument, "step {}: the training loss is {}", step + 1, loss);
    if (o.max_grad_norm > 0) {
      grad::clip_grad_norm(groups, o.max_grad_norm, step + 1);
    }
    const double lr = schedule.lr(step);
    adam.step(groups, lr);
    r.curve.push_back(loss);
    r.tokens += batch * o.seq_len;
    LoraProgress pr{.done = step + 1, .total = total, .loss = loss, .lr = lr};
    if ((o.eval_every > 0 && (step + 1) % o.eval_every == 0) || step + 1 == total) {
      const auto v0 = std::chrono::steady_clock::now();
      pr.val_loss = validate(step + 1);
      validation_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - v0).count();
    }
    if (progress != nullptr && *progress) {
      const double train_seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - train_t0).count() - validation_seconds;
      pr.seconds = elapsed();
      pr.tokens_per_second = train_seconds > 0 ? static_cast<double>(r.tokens) / train_seconds : 0;
      pr.eta_seconds = pr.seconds / static_cast<double>(step + 1) * static_cast<double>(total - step - 1);
      (*progress)(pr);
    }
  }
  r.steps = total;

  // Install: nothing is changed in the model before this point.
  for (size_t l = 0; l < m.layers.size(); ++l) {
    for (size_t s = 0; s < std::size(model::kLayerLinearRoles); ++s) {
      const grad::LoraParams<float>& a = p.layers[l].lora[s];
      if (a.empty()) continue;
      const TensorRole role = model::kLayerLinearRoles[s];
      const int64_t in = m.layers[l].linear(role).cols(), out = m.layers[l].linear(role).rows();
      Tensor ta = Tensor::zeros(DType::kF32, {a.rank, in});
      Tensor tb = Tensor::zeros(DType::kF32, {out, a.rank});
      std::copy(a.a.begin(), a.a.end(), ta.mutable_f32());
      std::copy(a.b.begin(), a.b.end(), tb.mutable_f32());
      m.layers[l].adapter_slot(role) = model::LoraAdapter::make(
          std::move(ta), std::move(tb), o.alpha, in, out, fmt::format("layer {} {} adapter", l, model::role_name(role)));
    }
  }
  r.seconds = elapsed();
  return r;
}

}  // namespace

std::vector<TensorRole> parse_lora_targets(std::span<const std::string> names) {
  std::vector<bool> chosen(std::size(model::kLayerLinearRoles), false);
  for (const std::string& name : names) {
    bool found = name == "all";
    for (size_t s = 0; s < std::size(model::kLayerLinearRoles); ++s) {
      const TargetName& t = kTargetNames[s];
      const bool match =
          name == "all" || name == t.shorter || name == t.peft || name == model::role_name(t.role);
      if (match) chosen[s] = true;
      found = found || match;
    }
    if (!found)
      fail(ErrorKind::kInvalidArgument,
           "option 'targets': '{}' matches no linear (names: q, k, v, o, gate, up, down, their PEFT module names "
           "q_proj ... down_proj, or all)", name);
  }
  std::vector<TensorRole> out;
  for (size_t s = 0; s < chosen.size(); ++s)
    if (chosen[s]) out.push_back(model::kLayerLinearRoles[s]);
  if (out.empty()) fail(ErrorKind::kInvalidArgument, "option 'targets' names no linear");
  return out;
}

void check_lora_finetune(const model::Model& model, const LoraFinetuneOptions& options) {
  try {
    check_options(options);
    check_shapes(model, options);
  } catch (const Error& e) {
    fail(e.kind(), "lora: {}", e.what());
  }
}

LoraFinetuneResult lora_finetune(model::Model& model, std::span<const int32_t> train_ids,
                                 std::span<const int32_t> val_ids, const LoraFinetuneOptions& options,
                                 ThreadPool& pool, const LoraProgressFn* progress) {
  try {
    return run(model, train_ids, val_ids, options, pool, progress);
  } catch (const Error& e) {
    fail(e.kind(), "lora: {}", e.what());
  }
}

}  // namespace calq::quant
