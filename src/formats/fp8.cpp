// FP8 codecs (see fp8.h) and the fp8 formats:
//  * fp8-e4m3, fp8-e5m2: one code per weight; per output channel (row) an fp32 scale
//    amax(row) / max (448 or 57344), so the row's largest magnitude maps to the format's max.
//  * fp8-e4m3-pt, fp8-e5m2-pt: the same with one fp32 scale amax(tensor) / max.
// Byte layout: rows × cols codes (row-major, one byte each), then the trailer: rows × fp32 scale
// (pc) or one fp32 scale (pt), little endian. A zero scale (all-zero row/tensor) stores code 0.
// Encoding of a weight: code = f32_to_fp8(x / scale) (RNE, saturating); decoding: fp8(code) · scale.
// Importance weights cannot change the nearest code, so they are ignored.
#include "formats/fp8.h"

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cassert>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "formats/format.h"

namespace calq {
namespace {

// 2^e as a float, exactly (e within the normal range).
constexpr float pow2f(int e) {
  float v = 1.0f;
  for (; e > 0; --e) v *= 2.0f;
  for (; e < 0; ++e) v *= 0.5f;
  return v;
}

// A sign + E-bit exponent + M-bit mantissa float, bias 2^(E−1) − 1, with the largest finite code
// kMaxCode (magnitude bits) and optional inf/NaN codes.
template <int E, int M, uint32_t kMaxCode>
struct MiniFloat {
  static constexpr int kBias = (1 << (E - 1)) - 1;
  static constexpr int kEmin = 1 - kBias;  // exponent of the smallest normal
  static constexpr uint32_t kSign = 1u << (E + M);

  static uint32_t encode(float x, uint32_t nan_code, uint32_t inf_code) {
    const uint32_t bits = std::bit_cast<uint32_t>(x);
    const uint32_t sign = (bits >> 31) != 0 ? kSign : 0;
    const uint32_t a = bits & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | nan_code;
    if (a == 0x7f800000u) return sign | inf_code;
    const float ax = std::bit_cast<float>(a);
    uint32_t code;
    if (ax < pow2f(kEmin)) {
      // Subnormal target: count of 2^(Emin − M) steps, rounded to nearest even (exact scaling).
      // A carry to 2^M is the smallest normal's code, as it should be.
      code = static_cast<uint32_t>(std::nearbyint(ax * pow2f(M - kEmin)));
    } else {
      // Normal: round the float's 23-bit mantissa to M bits, ties to even, carrying into the
      // exponent; then rebias the exponent from 127 to kBias.
      constexpr int kShift = 23 - M;
      const uint32_t rounded = (a + ((1u << (kShift - 1)) - 1) + ((a >> kShift) & 1u)) >> kShift;
      code = rounded - (static_cast<uint32_t>(127 - kBias) << M);
    }
    return sign | std::min(code, kMaxCode);
  }

  static float decode_magnitude(uint32_t mag) {
    const int e = static_cast<int>(mag >> M);
    const int m = static_cast<int>(mag & ((1u << M) - 1));
    if (e == 0) return std::ldexp(static_cast<float>(m), kEmin - M);
    return std::ldexp(static_cast<float>((1 << M) + m), e - kBias - M);
  }
};

using E4M3 = MiniFloat<4, 3, 0x7e>;
using E5M2 = MiniFloat<5, 2, 0x7b>;
using E2M1 = MiniFloat<2, 1, 0x7>;

std::array<float, 256> make_table(float (*decode)(uint8_t)) {
  std::array<float, 256> t{};
  for (int c = 0; c < 256; ++c) t[static_cast<size_t>(c)] = decode(static_cast<uint8_t>(c));
  return t;
}

}  // namespace

uint8_t f32_to_e4m3(float x) { return static_cast<uint8_t>(E4M3::encode(x, 0x7f, 0x7e)); }
uint8_t f32_to_e5m2(float x) { return static_cast<uint8_t>(E5M2::encode(x, 0x7f, 0x7c)); }
uint8_t f32_to_e2m1(float x) { return static_cast<uint8_t>(E2M1::encode(x, 0x7, 0x7)); }

float e4m3_to_f32(uint8_t code) {
  const uint32_t mag = code & 0x7fu;
  const float v = mag == 0x7f ? std::numeric_limits<float>::quiet_NaN() : E4M3::decode_magnitude(mag);
  return (code & 0x80) != 0 ? -v : v;
}

float e5m2_to_f32(uint8_t code) {
  const uint32_t mag = code & 0x7fu;
  float v;
  if (mag == 0x7c) {
    v = std::numeric_limits<float>::infinity();
  } else if (mag > 0x7c) {
    v = std::numeric_limits<float>::quiet_NaN();
  } else {
    v = E5M2::decode_magnitude(mag);
  }
  return (code & 0x80) != 0 ? -v : v;
}

float e2m1_to_f32(uint8_t code) {
  // Sixteen values, decoded once from the bit fields (this sits in the mx/fp4 inner loops).
  static const std::array<float, 16> table = [] {
    std::array<float, 16> t{};
    for (uint32_t c = 0; c < 16; ++c) {
      const float v = E2M1::decode_magnitude(c & 0x7u);
      t[c] = (c & 0x8) != 0 ? -v : v;
    }
    return t;
  }();
  return table[code & 15u];
}

const float* e4m3_table() {
  static const std::array<float, 256> t = make_table(&e4m3_to_f32);
  return t.data();
}

const float* e5m2_table() {
  static const std::array<float, 256> t = make_table(&e5m2_to_f32);
  return t.data();
}

void fp8_decode_scaled_reference(bool e4m3, const uint8_t* codes, int64_t n, float scale, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = (e4m3 ? e4m3_to_f32(codes[i]) : e5m2_to_f32(codes[i])) * scale;
}

void fp8_decode_scaled(bool e4m3, const uint8_t* codes, int64_t n, float scale, float* out) {
  const float* table = e4m3 ? e4m3_table() : e5m2_table();
  int64_t i = 0;
  const __m256 s = _mm256_set1_ps(scale);
  for (; i + 8 <= n; i += 8) {
    const __m128i c8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + i));
    const __m256i idx = _mm256_cvtepu8_epi32(c8);
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_i32gather_ps(table, idx, 4), s));
  }
  for (; i < n; ++i) out[i] = table[codes[i]] * scale;
}

namespace {

class Fp8Format final : public Format {
 public:
  Fp8Format(bool e4m3, bool per_tensor) : e4m3_(e4m3), per_tensor_(per_tensor) {
    max_ = e4m3 ? kE4M3Max : kE5M2Max;
    const std::string base = e4m3 ? "fp8-e4m3" : "fp8-e5m2";
    traits_ = FormatTraits{
        .name = base + (per_tensor ? "-pt" : ""),
        .family = "fp8",
        .description = std::string(e4m3 ? "FP8 E4M3 (fn, max 448)" : "FP8 E5M2 (max 57344)") +
                       (per_tensor ? ", one fp32 scale per tensor" : ", fp32 scale per output channel"),
        .block_size = 1,
        .block_bytes = 1,
        .ggml_type = std::nullopt,
        // 8 bits plus the fp32 scale per 4096-weight row (pc) or per tensor (pt).
        .bits_per_weight = per_tensor ? 8.0 + 32.0 / (4096.0 * 4096.0) : 8.0 + 32.0 / 4096.0,
        // Measured on the contract data (N(0, σ) rows): e4m3 0.0266 (pc and pt), e5m2 0.0526 (pc),
        // 0.0524 (pt); bounds carry 10% headroom. (Relative precision does not depend on the scale.)
        .max_relative_rmse = e4m3 ? 0.0293 : 0.0579,
    };
  }
  const FormatTraits& traits() const override { return traits_; }
  size_t trailer_bytes(int64_t rows, int64_t) const override { return per_tensor_ ? 4 : 4 * static_cast<size_t>(rows); }

  void dequantize_rows(const std::byte* data, int64_t rows, int64_t cols, int64_t r0, int64_t r1,
                       float* out) const override {
    decode_rows(data, rows, cols, r0, r1, out, &fp8_decode_scaled);
  }
  void dequantize_rows_reference(const std::byte* data, int64_t rows, int64_t cols, int64_t r0, int64_t r1,
                                 float* out) const override {
    decode_rows(data, rows, cols, r0, r1, out, &fp8_decode_scaled_reference);
  }

 protected:
  void do_quantize(ThreadPool* pool, const float* src, int64_t rows, int64_t cols, std::byte* dst,
                   const QuantizeOptions&) const override {
    std::byte* trailer = dst + rows * cols;
    float tensor_scale = 0;
    if (per_tensor_) {
      tensor_scale = scale_of(src, rows * cols);
      std::memcpy(trailer, &tensor_scale, 4);
    }
    auto do_rows = [&](int64_t a, int64_t b) {
      for (int64_t r = a; r < b; ++r) {
        const float* x = src + r * cols;
        float scale = tensor_scale;
        if (!per_tensor_) {
          scale = scale_of(x, cols);
          std::memcpy(trailer + 4 * r, &scale, 4);
        }
        auto* codes = reinterpret_cast<uint8_t*>(dst + r * cols);
        for (int64_t i = 0; i < cols; ++i) {
          if (scale == 0.0f) {
            codes[i] = 0;
          } else {
            codes[i] = e4m3_ ? f32_to_e4m3(x[i] / scale) : f32_to_e5m2(x[i] / scale);
          }
        }
      }
    };
    for_each_row_range(pool, rows, cols, do_rows);
  }

 private:
  float scale_of(const float* x, int64_t n) const {
    float amax = 0;
    for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
    return amax / max_;
  }

  using DecodeFn = void (*)(bool, const uint8_t*, int64_t, float, float*);
  void decode_rows(const std::byte* data, int64_t rows, int64_t cols, int64_t r0, int64_t r1, float* out,
                   DecodeFn decode) const {
    assert(0 <= r0 && r0 <= r1 && r1 <= rows);
    const std::byte* trailer = data + rows * cols;
    for (int64_t r = r0; r < r1; ++r) {
      float scale;
      std::memcpy(&scale, trailer + (per_tensor_ ? 0 : 4 * r), 4);
      decode(e4m3_, reinterpret_cast<const uint8_t*>(data + r * cols), cols, scale, out + (r - r0) * cols);
    }
  }

  bool e4m3_, per_tensor_;
  float max_;
  FormatTraits traits_;
};

}  // namespace

FormatList make_fp8_formats() {
  FormatList list;
  for (bool e4m3 : {true, false}) {
    for (bool pt : {false, true}) list.push_back(std::make_unique<Fp8Format>(e4m3, pt));
  }
  return list;
}

}  // namespace calq
