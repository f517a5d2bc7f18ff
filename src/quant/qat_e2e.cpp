#include "quant/qat_e2e.h"

#include <fmt/format.h>

#include <algorithm>
#include <cassert>
#include <chrono>
#include <cmath>
#include <cstring>
#include <random>
#include <span>
#include <string>

#include "core/error.h"
#include "grad/fake_quant.h"
#include "grad/fake_quant_int.h"
#include "grad/model_grad.h"
#include "grad/optim.h"
#include "quant/qat_trainable.h"

namespace calq::quant {
namespace {

using detail::Trainable;
using detail::linear_of;
using Params = grad::ModelParams<float>;

// The samples' token ids and the teacher's logits, by batch.
class Batches {
 public:
  Batches(const ModelReconstructionTarget& t, const Params& teacher, bool cache, ThreadPool& pool)
      : t_(t), teacher_(teacher), pool_(pool), seq_len_(static_cast<int64_t>(t.samples[0].size())),
        vocab_(t.teacher->config.vocab_size) {
    if (!cache) return;
    cached_.resize(t.samples.size() * static_cast<size_t>(seq_len_ * vocab_));
    for (size_t s = 0; s < t.samples.size(); ++s) {
      const std::vector<float> logits = grad::model_logits<float>(pool, t.teacher->config, teacher, t.samples[s], seq_len_);
      std::memcpy(&cached_[s * static_cast<size_t>(seq_len_ * vocab_)], logits.data(), sizeof(float) * logits.size());
    }
  }
  int64_t seq_len() const { return seq_len_; }
  // Fills ids and teacher logits of the samples `which`.
  void get(std::span<const int64_t> which, std::vector<int32_t>& ids, std::vector<float>& teacher) {
    ids.clear();
    for (const int64_t s : which) ids.insert(ids.end(), t_.samples[static_cast<size_t>(s)].begin(),
                                             t_.samples[static_cast<size_t>(s)].end());
    const auto per = static_cast<size_t>(seq_len_ * vocab_);
    teacher.resize(which.size() * per);
    for (size_t k = 0; k < which.size(); ++k) {
      if (!cached_.empty()) {
        std::memcpy(&teacher[k * per], &cached_[static_cast<size_t>(which[k]) * per], sizeof(float) * per);
        continue;
      }
      // One sample at a time, as the cache computes them: sgemm's rounding of a row may depend on
      // the number of rows in the call on some CPUs, and the logits must not depend on the cache.
      const std::vector<float> logits = grad::model_logits<float>(pool_, t_.teacher->config, teacher_,
                                                                  t_.samples[static_cast<size_t>(which[k])], seq_len_);
      std::memcpy(&teacher[k * per], logits.data(), sizeof(float) * per);
    }
  }

 private:
  const ModelReconstructionTarget& t_;
  const Params& teacher_;
  ThreadPool& pool_;
  int64_t seq_len_, vocab_;
  std::vector<float> cached_;
};

// KL over all samples (mean over positions) of the student `p`, `batch` samples at a time.
double full_loss(ThreadPool& pool, const model::ModelConfig& config, const Params& p, Batches& batches,
                 int64_t samples, int64_t batch) {
  std::vector<int32_t> ids;
  std::vector<float> teacher;
  std::vector<int64_t> which;
  double sum = 0;
  for (int64_t s0 = 0; s0 < samples; s0 += batch) {
    const int64_t b = std::min(batch, samples - s0);
    which.clear();
    for (int64_t k = 0; k < b; ++k) which.push_back(s0 + k);
    batches.get(which, ids, teacher);
    sum += grad::model_loss<float>(pool, config, p, ids, batches.seq_len(),
                                   {.kind = grad::LossKind::kKlDivergence, .teacher_logits = teacher}) *
           static_cast<double>(b);
  }
  return sum / static_cast<double>(samples);
}

QatE2eResult run(const ModelReconstructionTarget& t, const QatE2eOptions& o, ThreadPool& pool) {
  if (t.samples.empty()) fail(ErrorKind::kInvalidArgument, "it needs calibration samples (token sequences)");
  for (size_t s = 0; s < t.samples.size(); ++s)
    if (t.samples[s].size() != t.samples[0].size() || t.samples[s].empty())
      fail(ErrorKind::kInvalidArgument, "calibration sample {} has {} tokens, sample 0 {}: they must be of one "
           "length (> 0)", s, t.samples[s].size(), t.samples[0].size());
  const model::ModelConfig& config = t.quantized->config;
  const auto samples = static_cast<int64_t>(t.samples.size());
  const int64_t batch = std::min(o.batch, samples);

  QatE2eResult r;
  const Params teacher = Params::from_model(*t.teacher, pool);
  Params start = Params::from_model(*t.quantized, pool);  // not changed (linear_of takes it mutable)

  std::vector<Trainable> trs;
  for (const ModelReconstructionLinear& lin : t.linears) {
    if (lin.format == nullptr) continue;
    if (!grad::has_fake_quant(*lin.format))
      fail(ErrorKind::kUnsupported, "tensor {}: format {} has no fake-quantization path to train through",
           lin.name, lin.format->name());
    const bool is_int = grad::is_int_format(*lin.format);
    if (!is_int && !o.train_weights) continue;  // nothing of it to train
    const model::LinearWeight& q = t.quantized->layers[static_cast<size_t>(lin.layer)].linear(lin.role);
    if (!q.is_quantized() || q.quantized().format != lin.format)
      fail(ErrorKind::kInvalidArgument, "tensor {}: the weight quantizer did not leave it in {}", lin.name,
           lin.format->name());
    Trainable tr{.role = lin.role, .layer = lin.layer, .format = lin.format, .name = std::string(lin.name),
                 .rows = q.rows(), .cols = q.cols(), .is_int = is_int};
    const std::vector<float>& w_start = linear_of(start.layers[static_cast<size_t>(lin.layer)], lin.role);
    if (is_int) {
      tr.layout = grad::int_layout(*lin.format);
      const std::vector<QuantParams> params =
          grad::read_int_params(*lin.format, q.quantized().bytes, tr.rows, tr.cols, tr.name);
      if (o.train_weights) {
        const Tensor orig = t.teacher->layers[static_cast<size_t>(lin.layer)].linear(lin.role).to_dense(pool);
        detail::init_int(tr, orig.f32(), w_start, params, detail::kDefaultStartReach);
        tr.grad_zero.resize(tr.zero.size());
      } else {
        detail::init_frozen(tr, w_start, params);
      }
      tr.grad_step.resize(tr.step.size());
    } else {
      tr.w = w_start;
      tr.fq = std::make_unique<grad::FakeQuantizer>(pool, *lin.format, w_start.data(), tr.rows, tr.cols,
                                                    QuantizeOptions{.tensor_name = lin.name});
      tr.mask.resize(tr.w.size());
    }
    if (o.train_weights) tr.grad_w.resize(tr.w.size());
    trs.push_back(std::move(tr));
  }

  Batches batches(t, teacher, o.cache_teacher, pool);
  r.loss_start = full_loss(pool, config, start, batches, samples, batch);
  r.loss_trained = r.loss_start;
  if (trs.empty()) return r;
  r.trained = true;

  const int64_t steps_per_epoch = (samples + batch - 1) / batch;
  const int64_t total = o.epochs * steps_per_epoch;
  detail::Trainer trainer(trs, {.train_weights = o.train_weights, .lr_weights = o.lr_weights, .lr_quant = o.lr,
                                .warmup = o.warmup, .total_steps = total, .method = "qat-e2e", .layer = -1,
                                .progress = t.progress});

  Params p = start;  // the trained linears replaced by their fake-quantized weights each step
  Params grads = Params::zeros(config);
  std::vector<int32_t> ids;
  std::vector<float> teacher_logits;
  std::vector<int64_t> order(static_cast<size_t>(samples));
  for (int64_t i = 0; i < samples; ++i) order[static_cast<size_t>(i)] = i;
  std::mt19937_64 rng(o.seed);
  int64_t step = 0;
  for (int64_t epoch = 0; epoch < o.epochs; ++epoch) {
    detail::shuffle(order, rng);
    for (int64_t s0 = 0; s0 < samples; s0 += batch, ++step) {
      const int64_t b = std::min(batch, samples - s0);
      batches.get(std::span(order).subspan(static_cast<size_t>(s0), static_cast<size_t>(b)), ids, teacher_logits);
      for (Trainable& tr : trs) tr.forward(pool, linear_of(p.layers[static_cast<size_t>(tr.layer)], tr.role).data());
      for (auto& named : grads.tensors()) std::fill(named.values->begin(), named.values->end(), 0.0f);
      const double loss = grad::model_forward_backward<float>(
          pool, config, p, ids, batches.seq_len(),
          {.kind = grad::LossKind::kKlDivergence, .teacher_logits = teacher_logits}, grads);
      for (Trainable& tr : trs) tr.backward(pool, linear_of(grads.layers[static_cast<size_t>(tr.layer)], tr.role).data());
      trainer.step(step, loss, r.curve);
    }
  }
  r.steps = step;

  // What is written, and the guard.
  Params as_written = start;
  std::vector<ModelReconstruction::Weight> weights;
  for (Trainable& tr : trs) {
    tr.forward(pool, linear_of(p.layers[static_cast<size_t>(tr.layer)], tr.role).data());
    weights.push_back({.layer = tr.layer, .role = tr.role, .tensor = tr.encode(pool)});
    const Tensor dense = model::LinearWeight(weights.back().tensor).to_dense(pool);
    std::vector<float>& dst = linear_of(as_written.layers[static_cast<size_t>(tr.layer)], tr.role);
    std::memcpy(dst.data(), dense.f32(), sizeof(float) * dst.size());
  }
  r.loss_trained = full_loss(pool, config, as_written, batches, samples, batch);
  if (r.loss_trained < r.loss_start) {
    r.trained_kept = true;
    r.weights = std::move(weights);
    r.fake_quantized = std::move(p);
  }
  return r;
}

}  // namespace

QatE2eResult qat_e2e(const ModelReconstructionTarget& t, const QatE2eOptions& o, ThreadPool& pool) {
  try {
    return run(t, o, pool);
  } catch (const Error& e) {
    fail(e.kind(), "qat-e2e: {}", e.what());
  }
}

}  // namespace calq::quant
