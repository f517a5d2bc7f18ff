#include "model/lora_adapter.h"

#include <cmath>

#include "core/error.h"

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

}  // namespace calq::model
