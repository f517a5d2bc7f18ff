// GridCodecs (grid.h) of the GGUF block formats: q4_0, q4_1, q5_0, q5_1, q8_0, iq4_nl, iq4_xs
// and the k-quants q2_k .. q6_k.
//
// choose() runs the format's own encoder (Format::quantize, with the block's slice of the
// importance) on the block's current values and reads the parameters back from the bytes it
// wrote: the fp16 block / super-block scale(s) and, for the super-block types, the sub-block scale
// (and min) codes. So they are by construction the ones the encoder picks; the encoder's codes are
// dropped. round_column() then assigns each value its code with the very arithmetic the encoder
// uses once its parameters are fixed (gguf_legacy.cpp / quant_search_kernels.cpp, gguf_iq4.cpp,
// gguf_kquants_kernels.cpp), and forms the value as the decoder does. pack() writes the bytes with
// the parameters as read and the codes as rounded. Rounding the unchanged values therefore gives
// exactly Format::quantize's bytes.
#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "formats/format_util.h"
#include "formats/gguf_kquants.h"
#include "formats/grid.h"
#include "formats/quant_search.h"

namespace calq {

std::unique_ptr<GridCodec> make_gguf_grid_codec(const Format& format);

namespace {

// How a value becomes a code once the parameters are fixed (one per encoder family).
enum class Rule {
  kUniform,  // q4_0 q5_0 q8_0: l = clamp(nearbyint(x/s)), y = l·s (quant_search's assign_uniform)
  kAffine,   // q4_1 q5_1: q = clamp(nearbyint((x − m)/s), 0, qmax), y = q·s + m (assign_affine, unfused)
  kTable,    // iq4_nl iq4_xs: k = nearest level of x/s, y = s·T[k] (assign_table)
  kAffineK,  // q2_k q4_k q5_k: q = round_clamp((x + m)·(1/d), 0, nmax), y = d·q − m (affine_exact)
  kSymK,     // q3_k q6_k: l = round_clamp(x·(1/d), lmin, lmax), y = d·l (sym_exact)
};

enum class Layout { kQ4_0, kQ4_1, kQ5_0, kQ5_1, kQ8_0, kIq4Nl, kIq4Xs, kQ2K, kQ3K, kQ4K, kQ5K, kQ6K };

struct CodecSpec {
  const char* name;
  Layout layout;
  Rule rule;
  int sub;     // weights per sub-block (one set of effective parameters)
  int lo, hi;  // code values lo..hi (stored as index value − lo)
};

constexpr CodecSpec kCodecs[] = {
    {"q4_0", Layout::kQ4_0, Rule::kUniform, 32, -8, 7},
    {"q4_1", Layout::kQ4_1, Rule::kAffine, 32, 0, 15},
    {"q5_0", Layout::kQ5_0, Rule::kUniform, 32, -16, 15},
    {"q5_1", Layout::kQ5_1, Rule::kAffine, 32, 0, 31},
    {"q8_0", Layout::kQ8_0, Rule::kUniform, 32, -127, 127},  // the encoder never writes −128
    {"iq4_nl", Layout::kIq4Nl, Rule::kTable, 32, 0, 15},
    {"iq4_xs", Layout::kIq4Xs, Rule::kTable, 32, 0, 15},
    {"q2_k", Layout::kQ2K, Rule::kAffineK, 16, 0, 3},
    {"q3_k", Layout::kQ3K, Rule::kSymK, 16, -4, 3},
    {"q4_k", Layout::kQ4K, Rule::kAffineK, 32, 0, 15},
    {"q5_k", Layout::kQ5K, Rule::kAffineK, 32, 0, 31},
    {"q6_k", Layout::kQ6K, Rule::kSymK, 16, -32, 31},
};

// IQ4's fixed non-linear grid (llama.cpp's kvalues_iq4nl).
constexpr int8_t kIq4Grid[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

const quant::TableLevels16& iq4_levels() {
  static const quant::TableLevels16 levels{std::span<const int8_t, 16>(kIq4Grid)};
  return levels;
}

[[noreturn]] void fail_non_finite(const QuantizeOptions& o, const Format& f, float v, int64_t row, int64_t col) {
  fail(ErrorKind::kInvalidArgument, "tensor '{}': non-finite value {} at row {}, column {}; cannot quantize to {}",
       o.tensor_name, v, row, col, f.name());
}

// MAXPS/MINPS semantics, as quant_search_kernels.cpp clamps.
inline float max_ps(float a, float b) { return a > b ? a : b; }
inline float min_ps(float a, float b) { return a < b ? a : b; }

// One parameter block's stored parameters, as read from the encoder's bytes.
struct BlockParams {
  uint16_t d = 0, m = 0;   // fp16 bits: scale (super-scale) and min / offset (when the type has one)
  uint8_t sc[16] = {};     // sub-block scale codes as stored (q3_k: 6-bit biased; q6_k: int8 bits; iq4_xs: 6-bit)
  uint8_t mn[16] = {};     // sub-block min codes (q2_k, q4_k, q5_k)
};

class GgufGridState final : public GridState {
 public:
  GgufGridState(int64_t rows, int64_t cols, int64_t block, int nsub, const QuantizeOptions& options)
      : rows_(rows),
        cols_(cols),
        nblocks_(cols / block),
        nsub_(nsub),
        options_(&options),
        params_(static_cast<size_t>(rows * nblocks_)),
        chosen_(static_cast<size_t>(rows * nblocks_), 0),
        scale_(static_cast<size_t>(rows * nblocks_ * nsub), 0.0f),
        offset_(static_cast<size_t>(rows * nblocks_ * nsub), 0.0f),
        codes_(static_cast<size_t>(rows * cols), 0) {}

  int64_t rows_, cols_, nblocks_;
  int nsub_;
  const QuantizeOptions* options_;
  std::vector<BlockParams> params_;  // [row][block]
  std::vector<uint8_t> chosen_;      // [row][block]
  std::vector<float> scale_;         // [row][block][sub]: effective scale of the sub-block
  std::vector<float> offset_;        // [row][block][sub]: effective offset / min (affine rules)
  std::vector<uint8_t> codes_;       // [row][col]: code value − lo
};

class GgufGridCodec final : public GridCodec {
 public:
  GgufGridCodec(const Format& format, const CodecSpec& spec) : format_(format), spec_(spec) {}

  const Format& format() const override { return format_; }
  int64_t param_cols(int64_t) const override { return format_.traits().block_size; }
  int levels() const override { return spec_.hi - spec_.lo + 1; }

  std::unique_ptr<GridState> start(int64_t rows, int64_t cols, const QuantizeOptions& options) const override {
    format_.check_shape(rows, cols, options.tensor_name);
    const int64_t block = format_.traits().block_size;
    return std::make_unique<GgufGridState>(rows, cols, block, static_cast<int>(block / spec_.sub), options);
  }

  void choose(GridState& state, int64_t block, int64_t r0, int64_t r1, const float* x, int64_t ld) const override {
    auto& st = static_cast<GgufGridState&>(state);
    const int64_t bs = format_.traits().block_size;
    const size_t bb = format_.traits().block_bytes;
    assert(block >= 0 && block < st.nblocks_ && r0 >= 0 && r0 < r1 && r1 <= st.rows_);
    const int64_t n = r1 - r0;
    std::vector<float> values(static_cast<size_t>(n * bs));
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t j = 0; j < bs; ++j) {
        const float v = x[r * ld + j];
        if (!std::isfinite(v)) fail_non_finite(*st.options_, format_, v, r0 + r, block * bs + j);
        values[static_cast<size_t>(r * bs + j)] = v;
      }
    }
    QuantizeOptions o = *st.options_;
    if (o.importance != nullptr) o.importance += block * bs;
    std::vector<std::byte> bytes(static_cast<size_t>(n) * bb);
    // A one-thread pool runs inline: the encoder's fast path (same bytes as the reference) on
    // this thread, whichever pool worker called us.
    ThreadPool serial(1);
    format_.quantize(serial, values.data(), n, bs, bytes, o);
    for (int64_t r = 0; r < n; ++r) {
      const size_t pb = static_cast<size_t>((r0 + r) * st.nblocks_ + block);
      st.params_[pb] = read_params(bytes.data() + static_cast<size_t>(r) * bb);
      set_effective(st.params_[pb], st.scale_.data() + pb * st.nsub_, st.offset_.data() + pb * st.nsub_);
      st.chosen_[pb] = 1;
    }
  }

  void round_column(GridState& state, int64_t col, int64_t r0, int64_t r1, const float* in, int64_t stride,
                    float* out) const override {
    auto& st = static_cast<GgufGridState&>(state);
    const int64_t bs = format_.traits().block_size;
    assert(col >= 0 && col < st.cols_ && r0 >= 0 && r0 <= r1 && r1 <= st.rows_);
    const int64_t block = col / bs;
    const int64_t sub = (col % bs) / spec_.sub;
    for (int64_t r = r0; r < r1; ++r) {
      const float x = in[(r - r0) * stride];
      if (!std::isfinite(x)) fail_non_finite(*st.options_, format_, x, r, col);
      const size_t pb = static_cast<size_t>(r * st.nblocks_ + block);
      assert(st.chosen_[pb] && "round_column before choose for this block");
      const size_t ps = pb * st.nsub_ + static_cast<size_t>(sub);
      int code = 0;
      out[(r - r0) * stride] = round_value(x, st.scale_[ps], st.offset_[ps], code);
      st.codes_[static_cast<size_t>(r * st.cols_ + col)] = static_cast<uint8_t>(code - spec_.lo);
    }
  }

  void pack(const GridState& state, std::span<std::byte> dst) const override {
    const auto& st = static_cast<const GgufGridState&>(state);
    const int64_t bs = format_.traits().block_size;
    const size_t bb = format_.traits().block_bytes;
    assert(dst.size() == format_.tensor_bytes(st.rows_, st.cols_));
    for (int64_t r = 0; r < st.rows_; ++r) {
      for (int64_t b = 0; b < st.nblocks_; ++b) {
        const size_t pb = static_cast<size_t>(r * st.nblocks_ + b);
        assert(st.chosen_[pb] && "pack before every block was chosen");
        write_block(st.params_[pb], st.codes_.data() + r * st.cols_ + b * bs, dst.data() + pb * bb);
      }
    }
  }

 private:
  // ---- Parameters from the encoder's bytes ----
  BlockParams read_params(const std::byte* in) const {
    const auto* u = reinterpret_cast<const uint8_t*>(in);
    BlockParams p;
    auto f16 = [&](size_t at) {
      uint16_t h;
      std::memcpy(&h, in + at, 2);
      return h;
    };
    switch (spec_.layout) {
      case Layout::kQ4_0:
      case Layout::kQ5_0:
      case Layout::kQ8_0:
      case Layout::kIq4Nl: p.d = f16(0); break;
      case Layout::kQ4_1:
      case Layout::kQ5_1:
        p.d = f16(0);
        p.m = f16(2);
        break;
      case Layout::kIq4Xs: {  // d, scales_h (2 bits per sub-block), scales_l[4] (nibbles)
        p.d = f16(0);
        const uint16_t scales_h = f16(2);
        for (int ib = 0; ib < 8; ++ib) {
          const int low = (u[4 + ib / 2] >> (4 * (ib % 2))) & 15, high = (scales_h >> (2 * ib)) & 3;
          p.sc[ib] = static_cast<uint8_t>(low | (high << 4));
        }
        break;
      }
      case Layout::kQ2K:  // scales[16] (low nibble scale, high nibble min), qs[64], d, dmin
        for (int j = 0; j < 16; ++j) {
          p.sc[j] = u[j] & 15;
          p.mn[j] = u[j] >> 4;
        }
        p.d = f16(80);
        p.m = f16(82);
        break;
      case Layout::kQ3K: {  // hmask[32], qs[64], scales[12] (sixteen 6-bit codes, bias 32), d
        const uint8_t* s = u + 96;
        for (int j = 0; j < 16; ++j) {
          const int low = (s[j % 8] >> (j < 8 ? 0 : 4)) & 15, high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
          p.sc[j] = static_cast<uint8_t>(low | (high << 4));
        }
        p.d = f16(108);
        break;
      }
      case Layout::kQ4K:
      case Layout::kQ5K:  // d, dmin, scales[12], ...
        p.d = f16(0);
        p.m = f16(2);
        for (int j = 0; j < 8; ++j) kquant::unpack_scale_k4(u + 4, j, p.sc[j], p.mn[j]);
        break;
      case Layout::kQ6K:  // ql[128], qh[64], int8 scales[16], d
        std::memcpy(p.sc, u + 192, 16);
        p.d = f16(208);
        break;
    }
    return p;
  }

  // The per-sub-block scale (and offset) the encoder rounds under and the decoder multiplies by:
  // the fp16 value itself, or the decoder's product of super-scale and sub-block code.
  void set_effective(const BlockParams& p, float* scale, float* offset) const {
    const float d = f16_to_f32(p.d), m = f16_to_f32(p.m);
    const int nsub = static_cast<int>(format_.traits().block_size / spec_.sub);
    for (int j = 0; j < nsub; ++j) {
      switch (spec_.layout) {
        case Layout::kIq4Xs: scale[j] = d * static_cast<float>(static_cast<int>(p.sc[j]) - 32); break;
        case Layout::kQ2K:
        case Layout::kQ4K:
        case Layout::kQ5K:
          scale[j] = d * static_cast<float>(p.sc[j]);
          offset[j] = m * static_cast<float>(p.mn[j]);
          break;
        case Layout::kQ3K: scale[j] = d * static_cast<float>(static_cast<int>(p.sc[j]) - 32); break;
        case Layout::kQ6K: scale[j] = d * static_cast<float>(static_cast<int8_t>(p.sc[j])); break;
        default:
          scale[j] = d;
          offset[j] = m;
          break;
      }
    }
  }

  // ---- Rounding under fixed parameters: the encoders' own assignment arithmetic ----
  float round_value(float x, float s, float m, int& code) const {
    switch (spec_.rule) {
      case Rule::kUniform: {  // fit_symmetric → assign_symmetric<UniformLevels> → uniform_step
        const float xt = std::clamp(x, -quant::kTameLimit, quant::kTameLimit);  // tame_block, per element
        const float inv = 1.0f / s;
        if (s == 0 || !std::isfinite(inv)) {
          code = 0;  // the level nearest to 0
        } else {
          const float r = min_ps(max_ps(std::nearbyint(xt * inv), static_cast<float>(spec_.lo)),
                                 static_cast<float>(spec_.hi));
          code = static_cast<int>(r);
        }
        return static_cast<float>(code) * s;  // the decoder: float(q − bias)·d
      }
      case Rule::kAffine: {  // fit_affine → assign_affine_sums → affine_step (unfused)
        const float xt = std::clamp(x, -quant::kTameLimit, quant::kTameLimit);
        const float inv = s > 0 ? 1.0f / s : 0.0f;
        if (!(s > 0) || !std::isfinite(inv)) {
          code = 0;
        } else {
          const float r = min_ps(max_ps(std::nearbyint((xt - m) * inv), 0.0f), static_cast<float>(spec_.hi));
          code = static_cast<int>(r);
        }
        return quant::affine_value(code, s, m, false);
      }
      case Rule::kTable: {  // assign_symmetric<TableLevels16> → table_step
        const float xt = std::clamp(x, -quant::kTameLimit, quant::kTameLimit);
        const float inv = 1.0f / s;
        code = (s == 0 || !std::isfinite(inv)) ? iq4_levels().nearest(0.0f) : iq4_levels().nearest(xt * inv);
        return s * static_cast<float>(kIq4Grid[code]);  // the decoder: dl·T[q]
      }
      case Rule::kAffineK: {  // affine_exact
        const float id = s != 0 ? 1.0f / s : 0.0f;
        const float l = kquant::round_clamp((x + m) * id, 0.0f, static_cast<float>(spec_.hi));
        code = static_cast<int>(l);
        return s * l - m;  // the decoder: (d·sc)·q − dmin·mn
      }
      case Rule::kSymK: {  // sym_exact
        const float id = s != 0 ? 1.0f / s : 0.0f;
        const float l = kquant::round_clamp(x * id, static_cast<float>(spec_.lo), static_cast<float>(spec_.hi));
        code = static_cast<int>(l);
        return s * l;  // the decoder: (d·c)·l
      }
    }
    return 0.0f;
  }

  // ---- Bytes of one block: stored parameters + codes (code value − lo) ----
  void write_block(const BlockParams& p, const uint8_t* q, std::byte* out) const {
    auto* u = reinterpret_cast<uint8_t*>(out);
    // Nibbles of 32 codes (element j < 16 low nibble of byte j, j + 16 the high one).
    auto nibbles = [](const uint8_t* c, uint8_t* qs) {
      for (int j = 0; j < 16; ++j) qs[j] = static_cast<uint8_t>((c[j] & 15) | ((c[j + 16] & 15) << 4));
    };
    auto high_bits = [](const uint8_t* c, std::byte* qh) {  // fifth bit of element j → bit j
      uint32_t h = 0;
      for (int j = 0; j < 32; ++j) h |= static_cast<uint32_t>((c[j] >> 4) & 1u) << j;
      std::memcpy(qh, &h, 4);
    };
    switch (spec_.layout) {
      case Layout::kQ4_0:
      case Layout::kIq4Nl:
        store_f16(out, p.d);
        nibbles(q, u + 2);
        return;
      case Layout::kQ4_1:
        store_f16(out, p.d);
        store_f16(out + 2, p.m);
        nibbles(q, u + 4);
        return;
      case Layout::kQ5_0:
        store_f16(out, p.d);
        high_bits(q, out + 2);
        nibbles(q, u + 6);
        return;
      case Layout::kQ5_1:
        store_f16(out, p.d);
        store_f16(out + 2, p.m);
        high_bits(q, out + 4);
        nibbles(q, u + 8);
        return;
      case Layout::kQ8_0:
        store_f16(out, p.d);
        for (int j = 0; j < 32; ++j) u[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(q[j] + spec_.lo));
        return;
      case Layout::kIq4Xs: {
        std::memset(out, 0, 8);
        store_f16(out, p.d);
        uint16_t scales_h = 0;
        for (int ib = 0; ib < 8; ++ib) {
          u[4 + ib / 2] |= static_cast<uint8_t>((p.sc[ib] & 15) << (4 * (ib % 2)));
          scales_h |= static_cast<uint16_t>(((p.sc[ib] >> 4) & 3) << (2 * ib));
          nibbles(q + 32 * ib, u + 8 + 16 * ib);
        }
        std::memcpy(out + 2, &scales_h, 2);
        return;
      }
      case Layout::kQ2K:
      case Layout::kQ4K:
      case Layout::kQ5K: {
        kquant::AffineBlock b;
        b.d = p.d;
        b.dmin = p.m;
        std::memcpy(b.sc, p.sc, sizeof b.sc);
        std::memcpy(b.mn, p.mn, sizeof b.mn);
        std::memcpy(b.q, q, sizeof b.q);
        if (spec_.layout == Layout::kQ2K) kquant::pack_q2_k(b, out);
        else if (spec_.layout == Layout::kQ4K) kquant::pack_q4_k(b, out);
        else kquant::pack_q5_k(b, out);
        return;
      }
      case Layout::kQ3K:
      case Layout::kQ6K: {
        kquant::SymmetricBlock b;
        b.d = p.d;
        for (int j = 0; j < 16; ++j) {
          b.c[j] = spec_.layout == Layout::kQ3K ? static_cast<int8_t>(static_cast<int>(p.sc[j]) - 32)
                                                : static_cast<int8_t>(p.sc[j]);
        }
        for (int e = 0; e < kquant::kSuper; ++e) b.l[e] = static_cast<int8_t>(q[e] + spec_.lo);
        if (spec_.layout == Layout::kQ3K) kquant::pack_q3_k(b, out);
        else kquant::pack_q6_k(b, out);
        return;
      }
    }
  }

  const Format& format_;
  CodecSpec spec_;
};

}  // namespace

// The codec of a GGUF block format (called by the format's family file once the format is made);
// nullptr for a format not in kCodecs.
std::unique_ptr<GridCodec> make_gguf_grid_codec(const Format& format) {
  for (const CodecSpec& s : kCodecs) {
    if (format.name() != s.name) continue;
    assert(format.traits().block_size % s.sub == 0);
    return std::make_unique<GgufGridCodec>(format, s);
  }
  return nullptr;
}

}  // namespace calq
