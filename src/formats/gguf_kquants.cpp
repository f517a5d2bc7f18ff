// The k-quant formats q2_k .. q6_k (GGUF types 10..14) as registered formats. Bytes are exactly
// llama.cpp's block_qN_K rows; decoding is bit-identical to ggml's dequantize_row_qN_K; encoding
// searches for the least Σ w·(x − y)² (see gguf_kquants_search*.cpp).
#include <memory>

#include "formats/format.h"
#include "formats/gguf_kquants.h"
#include "formats/grid.h"
#include "formats/int_dot.h"

namespace calq {

std::unique_ptr<GridCodec> make_gguf_grid_codec(const Format& format);  // gguf_grid.cpp

FormatList make_gguf_kquant_formats();

namespace {

using kquant::kSuper;

enum class KType { kQ2, kQ3, kQ4, kQ5, kQ6 };

struct KInfo {
  const char* name;
  const char* description;
  uint32_t ggml_type;
  size_t block_bytes;
  double max_relative_rmse;
};

// max_relative_rmse: the relative RMS error measured on the contract test's N(0, 1) rows (8 × 4096,
// seed 11) with the default encoder — q2 0.2624, q3 0.1409, q4 0.0692, q5 0.0341, q6 0.0167 —
// plus about 10 % headroom.
KInfo info(KType t) {
  switch (t) {
    case KType::kQ2: return {"q2_k", "llama.cpp Q2_K: 2-bit affine, 16x16 sub-blocks, 4-bit scales/mins", 10, 84, 0.29};
    case KType::kQ3: return {"q3_k", "llama.cpp Q3_K: 3-bit symmetric, 16x16 sub-blocks, 6-bit scales", 11, 110, 0.155};
    case KType::kQ4: return {"q4_k", "llama.cpp Q4_K: 4-bit affine, 8x32 sub-blocks, 6-bit scales/mins", 12, 144, 0.076};
    case KType::kQ5: return {"q5_k", "llama.cpp Q5_K: 5-bit affine, 8x32 sub-blocks, 6-bit scales/mins", 13, 176, 0.0375};
    case KType::kQ6: return {"q6_k", "llama.cpp Q6_K: 6-bit symmetric, 16x16 sub-blocks, int8 scales", 14, 210, 0.0183};
  }
  return {};
}

// Search breadth, traded for speed: a short grid of inverse scales — the Lloyd passes, the exact
// code search and the super-scale refit after it recover most of what a wider grid finds. On the
// ggml vectors, q4_K plain MSE is 0.970 of llama.cpp's with 5 grid points and one refit (about
// 22 ns/weight, AVX2, one thread of a loaded 2-core machine) vs 0.954 with 21 points and two
// refits (about 40 ns/weight). q2_K's grid reaches past the range (clipping), which pays at 2 bits.
kquant::AffineSpec affine_spec(KType t) {
  switch (t) {
    case KType::kQ2: return {.sub = 16, .nmax = 3, .code_max = 15, .rmin = 0.0f, .rdelta = 1.0f, .nstep = 2};
    case KType::kQ4: return {.sub = 32, .nmax = 15, .code_max = 63, .rmin = -0.5f, .rdelta = 0.5f, .nstep = 4};
    default: return {.sub = 32, .nmax = 31, .code_max = 63, .rmin = -0.5f, .rdelta = 0.5f, .nstep = 4};
  }
}

// With importance the symmetric types gain from a much wider grid that clips the largest |x| hard
// (up to 32 levels past the end): a sub-block's scale should serve its important weights, not its
// largest one. On the ggml vectors this takes the imatrix-weighted MSE from 0.94 to 0.26 of
// llama.cpp's (q3_K) and from 0.70 to 0.44 (q6_K). The affine types gain nothing from it.
kquant::SymmetricSpec symmetric_spec(KType t, bool weighted) {
  kquant::SymmetricSpec s{.sub = 16, .lmin = -32, .lmax = 31, .cmin = -128, .cmax = 127};
  if (t == KType::kQ3) s = {.sub = 16, .lmin = -4, .lmax = 3, .cmin = -32, .cmax = 31};
  if (weighted) {
    s.rmin = 0.0f;
    s.rdelta = 4.0f;
    s.nstep = 8;
    s.code_radius = 4;  // q6_K imatrix-wMSE 0.44 -> 0.42 of llama.cpp's (plain: 0.960 -> 0.951, not worth it)
  } else {
    s.rmin = -0.5f;
    s.rdelta = 0.5f;
    s.nstep = 2;
  }
  return s;
}

class KQuantIntCodec final : public IntRowCodec {
 public:
  explicit KQuantIntCodec(KType t)
      : IntRowCodec(t == KType::kQ4 || t == KType::kQ5 ? 32 : 16, max_code(t)), type_(t) {}
  void decode_row(const std::byte* data, int64_t, int64_t cols, int64_t r, uint8_t* u, float* scale,
                  float* offset) const override {
    const std::byte* row = data + r * (cols / kSuper) * static_cast<int64_t>(info(type_).block_bytes);
    switch (type_) {
      case KType::kQ2: return kquant::decode_int_q2_k(row, cols, u, scale, offset);
      case KType::kQ3: return kquant::decode_int_q3_k(row, cols, u, scale, offset);
      case KType::kQ4: return kquant::decode_int_q4_k(row, cols, u, scale, offset);
      case KType::kQ5: return kquant::decode_int_q5_k(row, cols, u, scale, offset);
      case KType::kQ6: return kquant::decode_int_q6_k(row, cols, u, scale, offset);
    }
  }

 private:
  static int max_code(KType t) {
    switch (t) {
      case KType::kQ2: return 3;
      case KType::kQ3: return 7;
      case KType::kQ4: return 15;
      case KType::kQ5: return 31;
      case KType::kQ6: return 63;
    }
    return 255;
  }
  KType type_;
};

class KQuantFormat final : public RowFormat {
 public:
  explicit KQuantFormat(KType t) : type_(t), int_codec_(t) {
    const KInfo i = info(t);
    traits_ = FormatTraits{
        .name = i.name,
        .family = "gguf",
        .description = i.description,
        .block_size = kSuper,
        .block_bytes = i.block_bytes,
        .ggml_type = i.ggml_type,
        .bits_per_weight = double(i.block_bytes) * 8.0 / kSuper,
        .max_relative_rmse = i.max_relative_rmse,
    };
  }
  const FormatTraits& traits() const override { return traits_; }
  const GridCodec* grid_codec() const override { return grid_codec_.get(); }
  const IntRowCodec* int_row_codec() const override { return &int_codec_; }
  // The codec refers to this format, so the family's make_ function makes it once the format exists.
  void make_grid_codec() { grid_codec_ = make_gguf_grid_codec(*this); }

 protected:
  void quantize_row(const float* x, int64_t cols, const float* importance, std::byte* out) const override {
    encode_row(kquant::scalar_kernels(), x, cols, importance, out);
  }
  void quantize_row_fast(const float* x, int64_t cols, const float* importance, std::byte* out) const override {
    encode_row(kquant::fast_kernels(), x, cols, importance, out);
  }
  void dequantize_row(const std::byte* in, int64_t cols, float* out) const override {
    switch (type_) {
      case KType::kQ2: kquant::decode_q2_k(in, cols, out); break;
      case KType::kQ3: kquant::decode_q3_k(in, cols, out); break;
      case KType::kQ4: kquant::decode_q4_k(in, cols, out); break;
      case KType::kQ5: kquant::decode_q5_k(in, cols, out); break;
      case KType::kQ6: kquant::decode_q6_k(in, cols, out); break;
    }
  }
  void dequantize_row_fast(const std::byte* in, int64_t cols, float* out) const override {
    switch (type_) {
      case KType::kQ4: kquant::decode_q4_k_fast(in, cols, out); break;
      case KType::kQ6: kquant::decode_q6_k_fast(in, cols, out); break;
      default: dequantize_row(in, cols, out); break;
    }
  }

 private:
  void encode_row(const kquant::Kernels& kn, const float* x, int64_t cols, const float* importance,
                  std::byte* out) const {
    float w[kSuper];
    const bool affine = type_ == KType::kQ2 || type_ == KType::kQ4 || type_ == KType::kQ5;
    const auto as = affine_spec(type_);
    const auto ss = symmetric_spec(type_, importance != nullptr);
    for (int64_t b = 0; b < cols / kSuper; ++b) {
      const float* xb = x + b * kSuper;
      kquant::block_weights(importance != nullptr ? importance + b * kSuper : nullptr, w);
      std::byte* ob = out + b * traits_.block_bytes;
      if (affine) {
        kquant::AffineBlock blk;
        kquant::encode_affine(as, kn, xb, w, blk);
        if (type_ == KType::kQ2) kquant::pack_q2_k(blk, ob);
        else if (type_ == KType::kQ4) kquant::pack_q4_k(blk, ob);
        else kquant::pack_q5_k(blk, ob);
      } else {
        kquant::SymmetricBlock blk;
        kquant::encode_symmetric(ss, kn, xb, w, blk);
        if (type_ == KType::kQ3) kquant::pack_q3_k(blk, ob);
        else kquant::pack_q6_k(blk, ob);
      }
    }
  }

  KType type_;
  KQuantIntCodec int_codec_;
  FormatTraits traits_;
  std::unique_ptr<GridCodec> grid_codec_;
};

}  // namespace

FormatList make_gguf_kquant_formats() {
  FormatList list;
  for (KType t : {KType::kQ2, KType::kQ3, KType::kQ4, KType::kQ5, KType::kQ6}) {
    auto format = std::make_unique<KQuantFormat>(t);
    format->make_grid_codec();
    list.push_back(std::move(format));
  }
  return list;
}

}  // namespace calq
