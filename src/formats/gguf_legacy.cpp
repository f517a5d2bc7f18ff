// GGUF's "legacy" 32-element block formats (llama.cpp ABI, ggml type ids 2, 3, 6, 7, 8):
//   q4_0: fp16 d, qs[16]                 x = (q − 8)·d      q in 0..15
//   q4_1: fp16 d, fp16 m, qs[16]         x = q·d + m        q in 0..15
//   q5_0: fp16 d, qh[4], qs[16]          x = (q − 16)·d     q in 0..31
//   q5_1: fp16 d, fp16 m, qh[4], qs[16]  x = q·d + m        q in 0..31
//   q8_0: fp16 d, int8 qs[32]            x = q·d
// Nibble packing: element j < 16 is the low nibble of qs[j], element j + 16 the high nibble; the
// fifth bit of element j is bit j of the little-endian uint32 qh.
//
// Decoding reproduces ggml's float operations exactly (checked bit for bit against its vectors).
// Encoding is calq's own: a weighted best-scale search (quant_search.h) that minimises
// Σ w·(x − decoded)², w = 1 or the importance, with the scales evaluated as stored in fp16.
#include <cstring>

#include "core/dtype.h"
#include "formats/format.h"
#include "formats/format_util.h"
#include "formats/grid.h"
#include "formats/gguf_legacy_simd.h"
#include "formats/int_dot.h"
#include "formats/quant_search.h"

namespace calq {

std::unique_ptr<GridCodec> make_gguf_grid_codec(const Format& format);  // gguf_grid.cpp

namespace {

constexpr int kBlock = 32;

enum class Legacy { kQ4_0, kQ4_1, kQ5_0, kQ5_1, kQ8_0 };

struct LegacySpec {
  Legacy kind;
  const char* name;
  uint32_t ggml_type;
  int bits;     // 4, 5 or 8
  bool affine;  // has an fp16 offset m
  const char* description;
  double max_relative_rmse;
};

// q4_1/q5_1 decode q·d + m. The product of q < 32 (5 significant bits) and an fp16 d (11) is
// exact in float, so whether ggml's build fuses it into an fma does not matter (the vectors agree
// with both; gguf_legacy_test checks the exactness).
constexpr bool kFusedAffine = false;

size_t block_bytes(const LegacySpec& s) {
  if (s.bits == 8) return 2 + kBlock;
  return (s.affine ? 4 : 2) + (s.bits == 5 ? 4 : 0) + kBlock / 2;
}

// The 32 stored 4- or 5-bit codes of a q4/q5 block (no bias applied) into q[32].
void unpack_codes(const LegacySpec& spec, const std::byte* block, uint8_t* q) {
  size_t off = spec.affine ? 4 : 2;
  uint32_t qh = 0;
  if (spec.bits == 5) {
    std::memcpy(&qh, block + off, 4);
    off += 4;
  }
  const auto* qs = reinterpret_cast<const uint8_t*>(block) + off;
  for (int j = 0; j < kBlock / 2; ++j) {
    q[j] = static_cast<uint8_t>((qs[j] & 0x0f) | (((qh >> j) & 1u) << 4));
    q[j + 16] = static_cast<uint8_t>((qs[j] >> 4) | (((qh >> (j + 16)) & 1u) << 4));
  }
}

// Rows as integer codes (int_dot.h), one block per 32 elements: u = q for the 4/5-bit types with
// scale d and offset −bias·d (q4_0, q5_0) or m (q4_1, q5_1); q8_0 u = q + 128, offset −128·d.
class LegacyIntCodec final : public IntRowCodec {
 public:
  explicit LegacyIntCodec(const LegacySpec& spec)
      : IntRowCodec(kBlock, spec.bits == 8 ? 255 : (1 << spec.bits) - 1), spec_(spec) {}
  void decode_row(const std::byte* data, int64_t, int64_t cols, int64_t r, uint8_t* u, float* scale,
                  float* offset) const override {
    const size_t bb = block_bytes(spec_);
    const std::byte* row = data + r * static_cast<int64_t>(cols / kBlock * bb);
    for (int64_t b = 0; b < cols / kBlock; ++b, row += bb, u += kBlock) {
      const float d = load_f16(row);
      const auto* p = reinterpret_cast<const uint8_t*>(row);
      scale[b] = d;
      if (spec_.bits == 8) {
        for (int j = 0; j < kBlock; ++j) u[j] = static_cast<uint8_t>(static_cast<int8_t>(p[2 + j]) + 128);
        offset[b] = -128.0f * d;
        continue;
      }
      unpack_codes(spec_, row, u);
      offset[b] = spec_.affine ? load_f16(row + 2) : -static_cast<float>(spec_.bits == 5 ? 16 : 8) * d;
    }
  }

 private:
  LegacySpec spec_;
};

class LegacyFormat final : public RowFormat {
 public:
  explicit LegacyFormat(const LegacySpec& spec) : spec_(spec), int_codec_(spec) {
    const size_t bb = block_bytes(spec);
    traits_ = FormatTraits{
        .name = spec.name,
        .family = "gguf",
        .description = spec.description,
        .block_size = kBlock,
        .block_bytes = bb,
        .ggml_type = spec.ggml_type,
        .bits_per_weight = static_cast<double>(bb) * 8.0 / kBlock,
        .max_relative_rmse = spec.max_relative_rmse,
    };
  }
  const FormatTraits& traits() const override { return traits_; }
  const GridCodec* grid_codec() const override { return grid_codec_.get(); }
  const IntRowCodec* int_row_codec() const override { return &int_codec_; }
  // The codec refers to this format, so the family's make_ function makes it once the format exists.
  void make_grid_codec() { grid_codec_ = make_gguf_grid_codec(*this); }

 protected:
  void quantize_row(const float* x, int64_t cols, const float* importance, std::byte* out) const override {
    quantize_blocks(x, cols, importance, out, false);
  }
  void quantize_row_fast(const float* x, int64_t cols, const float* importance, std::byte* out) const override {
    quantize_blocks(x, cols, importance, out, true);
  }
  void dequantize_row(const std::byte* in, int64_t cols, float* out) const override {
    const size_t bb = traits_.block_bytes;
    for (int64_t b = 0; b < cols / kBlock; ++b) dequantize_block(in + b * bb, out + b * kBlock);
  }
  void dequantize_row_fast(const std::byte* in, int64_t cols, float* out) const override {
    if (spec_.kind == Legacy::kQ8_0) return simd::dequantize_q8_0_row(in, cols / kBlock, out);
    if (spec_.kind == Legacy::kQ4_0) return simd::dequantize_q4_0_row(in, cols / kBlock, out);
    dequantize_row(in, cols, out);
  }

 private:
  void dequantize_block(const std::byte* in, float* y) const {
    const float d = load_f16(in);
    const auto* u = reinterpret_cast<const uint8_t*>(in);
    if (spec_.bits == 8) {
      for (int j = 0; j < kBlock; ++j) y[j] = static_cast<float>(static_cast<int8_t>(u[2 + j])) * d;
      return;
    }
    const float m = spec_.affine ? load_f16(in + 2) : 0.0f;
    uint8_t q[kBlock];
    unpack_codes(spec_, in, q);
    const int bias = spec_.affine ? 0 : (spec_.bits == 5 ? 16 : 8);
    for (int j = 0; j < kBlock / 2; ++j) {
      const int lo = q[j], hi = q[j + 16];
      if (spec_.affine) {
        y[j] = quant::affine_value(lo, d, m, kFusedAffine);
        y[j + 16] = quant::affine_value(hi, d, m, kFusedAffine);
      } else {
        y[j] = static_cast<float>(lo - bias) * d;
        y[j + 16] = static_cast<float>(hi - bias) * d;
      }
    }
  }

  // fast: evaluate the search's candidates with the AVX2 kernels (identical results).
  void quantize_blocks(const float* x, int64_t cols, const float* importance, std::byte* out, bool fast) const {
    const size_t bb = traits_.block_bytes;
    for (int64_t b = 0; b < cols / kBlock; ++b) {
      quantize_block(x + b * kBlock, importance == nullptr ? nullptr : importance + b * kBlock, out + b * bb, fast);
    }
  }

  void quantize_block(const float* x, const float* importance, std::byte* out, bool fast) const {
    float w[kBlock];
    quant::block_weights(importance, kBlock, w);
    uint8_t q[kBlock];
    auto* u = reinterpret_cast<uint8_t*>(out);
    if (spec_.affine) {
      const quant::AffineFit fit =
          quant::fit_affine(x, w, kBlock, (1 << spec_.bits) - 1, kFusedAffine, quant::ScaleSearch{.fast = fast}, q);
      store_f16(out, quant::to_f16_bits(fit.scale));
      store_f16(out + 2, quant::to_f16_bits(fit.offset));
      pack(q, u + 4);
      return;
    }
    // q8_0 codes stay in −127..127 like ggml's own encoder: some dot-product kernels negate the
    // int8 codes, and −(−128) does not fit.
    const int lo = spec_.bits == 8 ? -127 : -(1 << (spec_.bits - 1));
    const int hi = spec_.bits == 8 ? 127 : (1 << (spec_.bits - 1)) - 1;
    const quant::UniformLevels levels{.lo = lo, .hi = hi};
    // An importance makes the weights uneven: then also try scales fitting the dominant element.
    quant::ScaleSearch search{.dominant_lo = importance != nullptr ? 0.1f : 0.0f, .fast = fast};
    if (spec_.bits == 8) {
      // 255 levels: clipping never pays, so the grid stays near amax/127 (5 points in
      // [0.96, 1]), and the fp16 scales just above it are swept, where the error is ragged.
      search.steps = 4;
      search.lo = 0.96f;
      search.hi = 1.0f;
      search.sweep_hi = 1.01f;
    }
    const quant::SymmetricFit fit = quant::fit_symmetric(x, w, kBlock, levels, search, q);
    store_f16(out, quant::to_f16_bits(fit.scale));
    if (spec_.bits == 8) {
      for (int j = 0; j < kBlock; ++j) u[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(q[j] + lo));
      return;
    }
    // Indices 0..hi−lo are exactly the stored codes (lo = −bias).
    pack(q, u + 2);
  }

  // Writes the 4- or 5-bit codes q[32] as (qh[4]) qs[16] at out.
  void pack(const uint8_t* q, uint8_t* out) const {
    if (spec_.bits == 5) {
      uint32_t qh = 0;
      for (int j = 0; j < kBlock; ++j) qh |= static_cast<uint32_t>((q[j] >> 4) & 1u) << j;
      std::memcpy(out, &qh, 4);
      out += 4;
    }
    for (int j = 0; j < kBlock / 2; ++j) out[j] = static_cast<uint8_t>((q[j] & 0x0f) | ((q[j + 16] & 0x0f) << 4));
  }

  LegacySpec spec_;
  LegacyIntCodec int_codec_;
  FormatTraits traits_;
  std::unique_ptr<GridCodec> grid_codec_;
};

// max_relative_rmse: calq's encoder measured 0.0823 (q4_0), 0.0700 (q4_1), 0.0410 (q5_0),
// 0.0337 (q5_1), 0.00504 (q8_0, with its short grid chosen for speed) on N(0, 1) rows of 4096
// (gguf_legacy_test's RelativeErrorOnGaussianRows, the contract test's distribution); the bounds
// add ~5%.
constexpr LegacySpec kSpecs[] = {
    {Legacy::kQ4_0, "q4_0", 2, 4, false, "GGUF Q4_0: 32-weight blocks, fp16 scale, 4-bit codes (4.5 bpw)", 0.0865},
    {Legacy::kQ4_1, "q4_1", 3, 4, true, "GGUF Q4_1: 32-weight blocks, fp16 scale and offset, 4-bit codes (5 bpw)",
     0.0735},
    {Legacy::kQ5_0, "q5_0", 6, 5, false, "GGUF Q5_0: 32-weight blocks, fp16 scale, 5-bit codes (5.5 bpw)", 0.043},
    {Legacy::kQ5_1, "q5_1", 7, 5, true, "GGUF Q5_1: 32-weight blocks, fp16 scale and offset, 5-bit codes (6 bpw)",
     0.0355},
    {Legacy::kQ8_0, "q8_0", 8, 8, false, "GGUF Q8_0: 32-weight blocks, fp16 scale, int8 codes (8.5 bpw)", 0.0053},
};

}  // namespace

FormatList make_gguf_legacy_formats() {
  FormatList list;
  for (const LegacySpec& s : kSpecs) {
    auto format = std::make_unique<LegacyFormat>(s);
    format->make_grid_codec();
    list.push_back(std::move(format));
  }
  return list;
}

}  // namespace calq
