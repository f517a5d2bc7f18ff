#include "model/lora_adapter.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/matmul.h"

#include "core/error.h"
#include "model/model.h"

namespace calq::model {
namespace {

void check_values(const Tensor& t, std::string_view context, const char* which) {
  const float* v = t.f32();
  for (int64_t i = 0; i < t.numel(); ++i)
    if (!std::isfinite(v[i]))
      fail(ErrorKind::kInvalidArgument, "{}: {}[{}] is not finite ({})", context, which, i, v[i]);
}

}  // namespace

LoraAdapter LoraAdapter::make(Tensor a, Tensor b, double alpha, int64_t in, int64_t out, std::string_view context) {
  if (a.dtype() != DType::kF32 || b.dtype() != DType::kF32)
    fail(ErrorKind::kInvalidArgument, "{}: A and B must be float32", context);
  if (a.shape().size() != 2 || b.shape().size() != 2 || a.shape()[0] < 1 || a.shape()[1] != in ||
      b.shape()[0] != out || b.shape()[1] != a.shape()[0])
    fail(ErrorKind::kInvalidArgument, "{}: A is {} and B is {}; a linear [{}, {}] needs A [rank, {}] and B [{}, rank]",
         context, shape_string(a.shape()), shape_string(b.shape()), out, in, in, out);
  if (!std::isfinite(alpha) || alpha <= 0)
    fail(ErrorKind::kInvalidArgument, "{}: alpha {} must be finite and > 0", context, alpha);
  check_values(a, context, "A");
  check_values(b, context, "B");
  LoraAdapter l;
  l.a_ = std::move(a);
  l.b_ = std::move(b);
  l.alpha_ = alpha;
  return l;
}

void LoraAdapter::apply(ThreadPool& pool, const float* x, int64_t rows, float* y) const {
  const int64_t r = rank();
  std::vector<float> t(static_cast<size_t>(rows * r));
  matmul_nt(pool, {.x = x, .ldx = in(), .w = a_.f32(), .ldw = in(), .y = t.data(), .ldy = r, .m = rows, .n = r,
                   .k = in()});
  const float s = scale();
  for (float& v : t) v *= s;
  matmul_nt(pool, {.x = t.data(), .ldx = r, .w = b_.f32(), .ldw = r, .y = y, .ldy = out(), .m = rows, .n = out(),
                   .k = r, .accumulate = true});
}

void LoraAdapter::apply_reference(const float* x, int64_t rows, float* y) const {
  const int64_t r = rank();
  const float* a = a_.f32();
  const float* b = b_.f32();
  std::vector<double> t(static_cast<size_t>(r));
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t k = 0; k < r; ++k) {
      double acc = 0;
      for (int64_t c = 0; c < in(); ++c) acc += static_cast<double>(x[i * in() + c]) * a[k * in() + c];
      t[static_cast<size_t>(k)] = acc * scale();
    }
    for (int64_t o = 0; o < out(); ++o) {
      double acc = 0;
      for (int64_t k = 0; k < r; ++k) acc += t[static_cast<size_t>(k)] * b[o * r + k];
      y[i * out() + o] = static_cast<float>(static_cast<double>(y[i * out() + o]) + acc);
    }
  }
}

void LoraAdapter::add_to_weight(ThreadPool& pool, float* w) const {
  const int64_t r = rank();
  std::vector<float> sb(b_.f32(), b_.f32() + b_.numel());
  const float s = scale();
  for (float& v : sb) v *= s;
  matmul_nn(pool, {.x = sb.data(), .ldx = r, .w = a_.f32(), .ldw = in(), .y = w, .ldy = in(), .m = out(), .n = in(),
                   .k = r, .accumulate = true});
}

void merge_adapters(Model& model, ThreadPool& pool) {
  for (LayerWeights& l : model.layers) {
    for (const TensorRole role : kLayerLinearRoles) {
      std::optional<LoraAdapter>& a = l.adapter_slot(role);
      if (!a) continue;
      LinearWeight& w = l.linear(role);
      const Tensor base = w.to_dense(pool);
      Tensor merged = Tensor::zeros(DType::kF32, base.shape());
      std::copy(base.f32(), base.f32() + base.numel(), merged.mutable_f32());
      a->add_to_weight(pool, merged.mutable_f32());
      const ActivationQuant spec = w.act_quant();
      w = LinearWeight(std::move(merged));
      if (spec.enabled()) w.set_act_quant(spec);
      a.reset();
    }
  }
}

}  // namespace calq::model
