#include "grad/fake_quant.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "formats/fp8.h"
#include "formats/grid.h"

namespace calq::grad {
namespace {

// Rounded under a frozen GGUF block, ±kProbe lands on the block's extreme representable values at
// that position (every codec clamps its code; the tame rules clamp x to ±1e12 first).
constexpr float kProbe = 1e30f;

enum class Dynamic { kNone, kFloat, kNeverClips, kFp8, kMx };

Dynamic dynamic_kind(const Format& f) {
  const std::string& fam = f.traits().family;
  if (fam == "float") return Dynamic::kFloat;
  // nf4.cpp: the stored absmax is never below the true one; nf4_bnb.cpp: codes are chosen against the
  // block's own absmax, so no code saturates (the double-quantized absmax only rescales the block).
  if (fam == "nf4") return Dynamic::kNeverClips;
  if (fam == "fp8") return Dynamic::kFp8;
  if (fam == "mx") return Dynamic::kMx;
  return Dynamic::kNone;
}

float read_f32(const std::byte* p) {
  float v;
  std::memcpy(&v, p, 4);
  return v;
}

}  // namespace

bool has_fake_quant(const Format& format) {
  return is_int_format(format) || format.grid_codec() != nullptr || dynamic_kind(format) != Dynamic::kNone;
}

FakeQuantizer::FakeQuantizer(ThreadPool& pool, const Format& format, const float* w0, int64_t rows, int64_t cols,
                             const QuantizeOptions& options)
    : format_(&format), rows_(rows), cols_(cols), frozen_(std::make_unique<Frozen>()) {
  frozen_->name = std::string(options.tensor_name);
  frozen_->options = options;
  frozen_->options.tensor_name = frozen_->name;  // stable: Frozen lives on the heap
  const QuantizeOptions& o = frozen_->options;
  if (is_int_format(format)) {
    kind_ = Kind::kInt;
    int_layout_ = int_layout(format);
    int_params_ = choose_int_params(format, w0, rows, cols, o);
  } else if (const GridCodec* codec = format.grid_codec()) {
    kind_ = Kind::kCodec;
    // Validate as Format::quantize would (finite values, importance) before choosing.
    std::vector<std::byte> check(format.tensor_bytes(rows, cols));
    format.quantize(pool, w0, rows, cols, check, o);
    frozen_->state = codec->start(rows, cols, o);
    const int64_t pc = codec->param_cols(cols);
    for_row_chunks(pool, rows, cols, [&](int64_t r0, int64_t r1) {
      for (int64_t b = 0; b < cols / pc; ++b) codec->choose(*frozen_->state, b, r0, r1, w0 + r0 * cols + b * pc, cols);
    });
  } else if (dynamic_kind(format) != Dynamic::kNone) {
    kind_ = Kind::kDynamic;
    format.check_shape(rows, cols, o.tensor_name);
  } else {
    fail(ErrorKind::kUnsupported, "format '{}' (family '{}') has no fake-quantization path for training",
         format.name(), format.traits().family);
  }
}

FakeQuantizer::~FakeQuantizer() = default;
FakeQuantizer::FakeQuantizer(FakeQuantizer&&) noexcept = default;
FakeQuantizer& FakeQuantizer::operator=(FakeQuantizer&&) noexcept = default;

void FakeQuantizer::forward(ThreadPool& pool, const float* w, float* w_hat, uint8_t* mask) {
  const QuantizeOptions& o = frozen_->options;
  switch (kind_) {
    case Kind::kInt:
      int_fake_quant(pool, int_layout_, int_params_, w, rows_, cols_, w_hat, mask, o.tensor_name);
      return;
    case Kind::kCodec: {
      const GridCodec& codec = *format_->grid_codec();
      GridState& st = *frozen_->state;
      const int64_t cols = cols_;
      for_row_chunks(pool, rows_, cols, [&](int64_t r0, int64_t r1) {
        const auto n = static_cast<size_t>(r1 - r0);
        std::vector<float> up(n, kProbe), down(n, -kProbe), hi(n), lo(n);
        for (int64_t c = 0; c < cols; ++c) {
          if (mask != nullptr) {
            codec.round_column(st, c, r0, r1, up.data(), 1, hi.data());
            codec.round_column(st, c, r0, r1, down.data(), 1, lo.data());
          }
          // Last, so the state's codes are those of w.
          codec.round_column(st, c, r0, r1, w + r0 * cols + c, cols, w_hat + r0 * cols + c);
          if (mask == nullptr) continue;
          for (int64_t r = r0; r < r1; ++r) {
            const size_t k = static_cast<size_t>(r - r0);
            const float a = std::min(lo[k], hi[k]), b = std::max(lo[k], hi[k]), x = w[r * cols + c];
            mask[r * cols + c] = x >= a && x <= b ? 1 : 0;
          }
        }
      });
      return;
    }
    case Kind::kDynamic: {
      std::vector<std::byte> bytes(format_->tensor_bytes(rows_, cols_));
      format_->quantize(pool, w, rows_, cols_, bytes, o);
      format_->dequantize(pool, bytes.data(), rows_, cols_, w_hat);
      if (mask != nullptr) dynamic_mask(bytes.data(), w, mask);
      return;
    }
  }
}

std::vector<float> FakeQuantizer::spacing(ThreadPool& pool) {
  std::vector<float> out(static_cast<size_t>(rows_ * cols_));
  const int64_t cols = cols_;
  switch (kind_) {
    case Kind::kInt:
      for (int64_t r = 0; r < rows_; ++r) {
        for (int64_t c = 0; c < cols; ++c)
          out[static_cast<size_t>(r * cols + c)] = int_params_[static_cast<size_t>(int_layout_.group_of(r, c, cols))].scale;
      }
      return out;
    case Kind::kCodec: {
      // The probes leave codes in the state; forward and encode round every column again first.
      const GridCodec& codec = *format_->grid_codec();
      const float gaps = static_cast<float>(codec.levels() - 1);
      for_row_chunks(pool, rows_, cols, [&](int64_t r0, int64_t r1) {
        const auto n = static_cast<size_t>(r1 - r0);
        std::vector<float> up(n, kProbe), down(n, -kProbe), hi(n), lo(n);
        for (int64_t c = 0; c < cols; ++c) {
          codec.round_column(*frozen_->state, c, r0, r1, up.data(), 1, hi.data());
          codec.round_column(*frozen_->state, c, r0, r1, down.data(), 1, lo.data());
          for (int64_t r = r0; r < r1; ++r) {
            const size_t k = static_cast<size_t>(r - r0);
            out[static_cast<size_t>(r * cols + c)] = std::fabs(hi[k] - lo[k]) / gaps;
          }
        }
      });
      return out;
    }
    case Kind::kDynamic: break;
  }
  fail(ErrorKind::kUnsupported, "tensor '{}': format {} has no frozen quantization parameters (it re-quantizes "
       "every forward), so its grid has no fixed spacing", frozen_->name, format_->name());
}

std::vector<std::byte> FakeQuantizer::encode(ThreadPool& pool, const float* w) {
  std::vector<std::byte> out(format_->tensor_bytes(rows_, cols_));
  switch (kind_) {
    case Kind::kInt: return encode_with_params(*format_, w, rows_, cols_, int_params_, frozen_->name);
    case Kind::kCodec: {
      std::vector<float> scratch(static_cast<size_t>(rows_ * cols_));
      forward(pool, w, scratch.data(), nullptr);
      format_->grid_codec()->pack(*frozen_->state, out);
      return out;
    }
    case Kind::kDynamic: format_->quantize(pool, w, rows_, cols_, out, frozen_->options); return out;
  }
  return out;
}

// |w| against the largest magnitude the format's block (row, tensor) can represent as encoded.
void FakeQuantizer::dynamic_mask(const std::byte* bytes, const float* w, uint8_t* mask) const {
  const Format& f = *format_;
  const int64_t rows = rows_, cols = cols_, bs = f.traits().block_size;
  const size_t rb = f.row_bytes(cols), bb = f.traits().block_bytes;
  const std::byte* trailer = bytes + static_cast<size_t>(rows) * rb;
  const std::string& name = f.name();
  const Dynamic kind = dynamic_kind(f);
  const bool per_tensor = name.ends_with("-pt"), nv = name == "nvfp4";
  const float fp8_max = name.starts_with("fp8-e4m3") ? kE4M3Max : kE5M2Max;
  // bf16 keeps every finite float finite: no clipping.
  const float float_top = name == "f16" ? 65504.0f : std::numeric_limits<float>::max();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      float top = std::numeric_limits<float>::infinity();
      switch (kind) {
        case Dynamic::kFloat: top = float_top; break;
        case Dynamic::kNeverClips: break;
        case Dynamic::kFp8: top = fp8_max * read_f32(trailer + (per_tensor ? 0 : 4 * r)); break;
        case Dynamic::kMx: {
          const auto s = static_cast<uint8_t>(bytes[static_cast<size_t>(r) * rb + static_cast<size_t>(c / bs) * bb]);
          // nvfp4: E2M1 · (E4M3 scale · T); mxfp4 (ggml): 2·E2M1 · 2^(e − 128).
          top = nv ? kE2M1Max * (e4m3_to_f32(s) * read_f32(trailer)) : std::ldexp(2.0f * kE2M1Max, static_cast<int>(s) - 128);
          break;
        }
        case Dynamic::kNone: assert(false); break;
      }
      mask[r * cols + c] = std::fabs(w[r * cols + c]) <= top ? 1 : 0;
    }
  }
}

void fake_quantize(ThreadPool& pool, const Format& format, const float* w, int64_t rows, int64_t cols, float* w_hat,
                   uint8_t* mask, const QuantizeOptions& options) {
  FakeQuantizer fq(pool, format, w, rows, cols, options);
  fq.forward(pool, w, w_hat, mask);
}

template <typename T>
void ste_backward(std::span<const T> grad_w_hat, std::span<const uint8_t> mask, std::span<T> grad_w) {
  assert(grad_w_hat.size() == mask.size() && grad_w.size() == mask.size());
  for (size_t i = 0; i < mask.size(); ++i) grad_w[i] = mask[i] != 0 ? grad_w_hat[i] : T(0);
}

template void ste_backward<float>(std::span<const float>, std::span<const uint8_t>, std::span<float>);
template void ste_backward<double>(std::span<const double>, std::span<const uint8_t>, std::span<double>);

}  // namespace calq::grad
