#include "core/tensor.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstdlib>
#include <cstring>
#include <new>

namespace calq {

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_string(const Shape& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

Tensor Tensor::zeros(DType dtype, Shape shape) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  const size_t n = t.nbytes();
  const size_t padded = (n + 63) / 64 * 64;
  auto* raw = static_cast<std::byte*>(std::aligned_alloc(64, padded == 0 ? 64 : padded));
  if (raw == nullptr) throw std::bad_alloc();
  std::memset(raw, 0, padded == 0 ? 64 : padded);
  t.owned_ = std::shared_ptr<std::byte[]>(raw, [](std::byte* p) { std::free(p); });
  t.data_ = raw;
  return t;
}

Tensor Tensor::view(DType dtype, Shape shape, const std::byte* data,
                    std::shared_ptr<const void> keep_alive) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.data_ = data;
  t.keep_alive_ = std::move(keep_alive);
  return t;
}

Tensor Tensor::to_f32() const {
  Tensor out = zeros(DType::kF32, shape_);
  convert_to_f32(dtype_, data_, out.mutable_f32(), static_cast<size_t>(numel()));
  return out;
}

}  // namespace calq
