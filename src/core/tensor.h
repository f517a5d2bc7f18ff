// Tensor — a dense, row-major n-d array of one DType.
//
// A Tensor either owns its bytes (64-byte aligned, zero-initialised) or views bytes owned by
// someone else (e.g. a memory-mapped file), kept alive through `keep_alive`. Views are read-only;
// mutable_data() asserts ownership. Copying a Tensor is cheap and shares the bytes.
#pragma once

#include <cassert>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace calq {

using Shape = std::vector<int64_t>;

int64_t shape_numel(const Shape& shape);
std::string shape_string(const Shape& shape);  // "[512, 16384]"

class Tensor {
 public:
  Tensor() = default;
  static Tensor zeros(DType dtype, Shape shape);
  static Tensor view(DType dtype, Shape shape, const std::byte* data,
                     std::shared_ptr<const void> keep_alive);

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t dim(size_t i) const { return shape_.at(i); }
  size_t rank() const { return shape_.size(); }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  bool owns_data() const { return owned_ != nullptr; }
  bool empty() const { return data_ == nullptr && numel() == 0; }

  const std::byte* data() const { return data_; }
  std::byte* mutable_data() {
    assert(owned_ && "mutable_data() on a view");
    return const_cast<std::byte*>(data_);
  }
  std::span<const std::byte> bytes() const { return {data_, nbytes()}; }

  // Typed access for F32 tensors (asserts the dtype).
  const float* f32() const {
    assert(dtype_ == DType::kF32);
    return reinterpret_cast<const float*>(data_);
  }
  float* mutable_f32() {
    assert(dtype_ == DType::kF32);
    return reinterpret_cast<float*>(mutable_data());
  }

  // An owned F32 copy (converting F16/BF16; F32 is copied into aligned memory).
  Tensor to_f32() const;

 private:
  DType dtype_ = DType::kF32;
  Shape shape_;
  const std::byte* data_ = nullptr;
  std::shared_ptr<std::byte[]> owned_;
  std::shared_ptr<const void> keep_alive_;
};

}  // namespace calq
