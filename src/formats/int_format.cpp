// Integer formats: int<b>-<granularity>-<sym|asym>[-f32], b in {2,3,4,5,6,8}, granularity pt (per
// tensor), pc (per output channel = row) or g32/g64/g128/g256 (groups along the row). Every
// combination is registered (144 formats).
//
// Arithmetic (formats/range.h): x̂ = scale · (q − zero_point), q = clamp(round_even(x / scale) + zero).
//  * sym: q in [−(2^(b−1) − 1), 2^(b−1) − 1] (the restricted, symmetric range: +absmax and −absmax
//    are both exact and 0 is exact), zero_point 0; stored code u = q + 2^(b−1), so u is never 0.
//    (int2-*-sym therefore has 3 levels −1, 0, +1.)
//  * asym: q in [0, 2^b − 1]; the range always includes 0, and zero_point is an integer in that
//    range, so 0 is exact; stored code u = q.
//  * The scale is stored as fp16 (default; RNE, saturated at 65504 — a tensor whose scale would
//    exceed that is an error suggesting the -f32 variant) or fp32 (-f32). Codes are chosen
//    against the stored scale.
//  * Scale/zero come from QuantizeOptions::range (nullptr = min-max / absmax). Importance weights
//    reach the chooser (the MSE chooser weights its objective with them); rounding is to nearest.
//
// Byte layout (all little endian; "meta" = scale (2 bytes fp16 or 4 bytes fp32), then for asym one
// byte zero_point; codes packed LSB-first as in formats/int_pack.h):
//  * gN:  each row is cols/N blocks of [meta][N·b/8 bytes of codes]; no trailer.
//  * pc:  each row is cols·b/8 bytes of codes (blocks of 8 codes = b bytes); trailer = rows × meta,
//         row r's meta at trailer offset r·|meta|.
//  * pt:  rows as pc; trailer = one meta for the whole tensor.
#include <immintrin.h>

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "formats/format.h"
#include "formats/format_util.h"
#include "formats/grid.h"
#include "formats/int_dot.h"
#include "formats/int_pack.h"
#include "formats/int_layout.h"
#include "formats/range.h"

namespace calq {

std::unique_ptr<GridCodec> make_int_grid_codec(const Format& format);  // int_grid.cpp

namespace {

enum class Granularity { kTensor, kChannel, kGroup };

constexpr float kMaxF16 = 65504.0f;

float store_f16(float s) { return f16_to_f32(f32_to_f16(std::min(s, kMaxF16))); }

// Contract-test bound (max relative RMSE on rows of N(0, σ) data, σ = 1/4 .. 4, cols 4096):
// measured on the contract test's data with the default min-max chooser (the larger of the fp16
// and fp32 variants), times 1.1 headroom, rounded up. pt is poor there by design: its rows differ
// in scale by 16× and share one scale. Index
// [bits index][granularity index][sym ? 0 : 1]; bits {2,3,4,5,6,8}, granularity {pt, pc, g32,
// g64, g128, g256}.
// clang-format off
constexpr double kBound[6][6][2] = {
    {{1.0321, 0.8307}, {0.9918, 0.7096}, {0.7181, 0.4435}, {0.7812, 0.4945}, {0.8320, 0.5444}, {0.8848, 0.5893}},  // int2
    {{0.5893, 0.5052}, {0.3866, 0.3066}, {0.2433, 0.1883}, {0.2706, 0.2099}, {0.2942, 0.2318}, {0.3198, 0.2529}},  // int3
    {{0.3307, 0.2919}, {0.1660, 0.1425}, {0.1039, 0.0875}, {0.1150, 0.0986}, {0.1257, 0.1092}, {0.1367, 0.1182}},  // int4
    {{0.1787, 0.1598}, {0.0769, 0.0690}, {0.0483, 0.0427}, {0.0541, 0.0475}, {0.0590, 0.0523}, {0.0635, 0.0574}},  // int5
    {{0.0907, 0.0816}, {0.0368, 0.0343}, {0.0237, 0.0211}, {0.0261, 0.0234}, {0.0284, 0.0259}, {0.0307, 0.0282}},  // int6
    {{0.0222, 0.0202}, {0.0092, 0.0085}, {0.0058, 0.0052}, {0.0064, 0.0058}, {0.0071, 0.0064}, {0.0076, 0.0071}},  // int8
};
// clang-format on

int bits_index(int bits) { return bits == 8 ? 5 : bits - 2; }

struct IntSpec {
  int bits = 4;
  Granularity gran = Granularity::kGroup;
  int64_t group = 128;
  bool symmetric = false;
  bool f32 = false;
};

class IntFormat;

// Rows as integer codes (int_dot.h) in blocks of 32: u is the stored code, scale the group's (or
// row's, or tensor's) scale, offset −scale·(2^(b−1) + zero_point) (sym) or −scale·zero_point (asym).
class IntFormatCodec final : public IntRowCodec {
 public:
  IntFormatCodec(const IntFormat& f, int bits) : IntRowCodec(32, (1 << bits) - 1), format_(f) {}
  void decode_row(const std::byte* data, int64_t rows, int64_t cols, int64_t r, uint8_t* u, float* scale,
                  float* offset) const override;

 private:
  const IntFormat& format_;
};

class IntFormat final : public Format {
 public:
  explicit IntFormat(const IntSpec& s) : spec_(s), int_codec_(*this, s.bits) {
    const int half = 1 << (s.bits - 1);
    grid_ = QuantGrid{.qmin = s.symmetric ? -(half - 1) : 0,
                      .qmax = s.symmetric ? half - 1 : (1 << s.bits) - 1,
                      .symmetric = s.symmetric,
                      .store_scale = s.f32 ? nullptr : &store_f16};
    offset_ = s.symmetric ? half : 0;
    meta_bytes_ = (s.f32 ? 4u : 2u) + (s.symmetric ? 0u : 1u);
    std::string gran_name;
    std::string gran_text;
    int gran_index = 0;
    switch (s.gran) {
      case Granularity::kTensor:
        gran_name = "pt", gran_text = "one scale per tensor", gran_index = 0;
        break;
      case Granularity::kChannel:
        gran_name = "pc", gran_text = "one scale per output channel", gran_index = 1;
        break;
      case Granularity::kGroup:
        gran_name = "g" + std::to_string(s.group);
        gran_text = "groups of " + std::to_string(s.group);
        gran_index = 2 + (s.group == 32 ? 0 : s.group == 64 ? 1 : s.group == 128 ? 2 : 3);
        break;
    }
    const bool grouped = s.gran == Granularity::kGroup;
    const int64_t block = grouped ? s.group : 8;
    const size_t block_bytes = (grouped ? meta_bytes_ : 0) + static_cast<size_t>(block * s.bits / 8);
    // For a 4096 × 4096 tensor: pc adds one meta per 4096 weights, pt one meta in all.
    double bpw = static_cast<double>(block_bytes) * 8.0 / static_cast<double>(block);
    if (s.gran == Granularity::kChannel) bpw += meta_bytes_ * 8.0 / 4096.0;
    if (s.gran == Granularity::kTensor) bpw += meta_bytes_ * 8.0 / (4096.0 * 4096.0);
    traits_ = FormatTraits{
        .name =
            "int" + std::to_string(s.bits) + "-" + gran_name + (s.symmetric ? "-sym" : "-asym") + (s.f32 ? "-f32" : ""),
        .family = "int",
        .description = std::to_string(s.bits) + "-bit integer, " +
                       (s.symmetric ? "symmetric (absmax scale)" : "asymmetric (scale + zero point)") + ", " +
                       gran_text + ", " + (s.f32 ? "fp32" : "fp16") + " scales",
        .block_size = block,
        .block_bytes = block_bytes,
        .ggml_type = std::nullopt,
        .bits_per_weight = bpw,
        .max_relative_rmse = kBound[bits_index(s.bits)][gran_index][s.symmetric ? 0 : 1],
    };
  }

  const FormatTraits& traits() const override { return traits_; }
  const GridCodec* grid_codec() const override { return grid_codec_.get(); }
  const IntRowCodec* int_row_codec() const override { return &int_codec_; }

  // IntFormatCodec's decoding: codes and the parameters of each 32-column block of row r.
  void decode_int_row(const std::byte* data, int64_t rows, int64_t cols, int64_t r, uint8_t* u, float* scale,
                      float* offset) const {
    const size_t rb = row_bytes(cols);
    const std::byte* row = data + r * rb;
    const auto put = [&](int64_t c0, int64_t n, const QuantParams& p) {
      const float s = p.scale, o = -(p.scale * static_cast<float>(offset_ + p.zero_point));
      for (int64_t b = c0 / 32; b < (c0 + n) / 32; ++b) {
        scale[b] = s;
        offset[b] = o;
      }
    };
    switch (spec_.gran) {
      case Granularity::kGroup: {
        const size_t bb = traits_.block_bytes;
        for (int64_t g = 0; g < cols / spec_.group; ++g) {
          unpack_codes(row + g * bb + meta_bytes_, spec_.group, spec_.bits, u + g * spec_.group);
          put(g * spec_.group, spec_.group, read_meta(row + g * bb));
        }
        return;
      }
      case Granularity::kChannel:
        unpack_codes(row, cols, spec_.bits, u);
        put(0, cols, read_meta(data + rows * rb + r * meta_bytes_));
        return;
      case Granularity::kTensor:
        unpack_codes(row, cols, spec_.bits, u);
        put(0, cols, read_meta(data + rows * rb));
        return;
    }
  }
  // The codec refers to this format, so the family's make_ function makes it once the format exists.
  void make_grid_codec() { grid_codec_ = make_int_grid_codec(*this); }

  // int_layout.h.
  IntLayout layout() const {
    using G = IntLayout::Granularity;
    return IntLayout{.bits = spec_.bits,
                     .granularity = spec_.gran == Granularity::kTensor    ? G::kTensor
                                    : spec_.gran == Granularity::kChannel ? G::kChannel
                                                                          : G::kGroup,
                     .group = spec_.gran == Granularity::kGroup ? spec_.group : 0,
                     .symmetric = spec_.symmetric,
                     .f32_scale = spec_.f32};
  }
  IntTensorParts parts(const std::byte* data, int64_t rows, int64_t cols) const {
    IntTensorParts p{.bits = spec_.bits, .rows = rows, .cols = cols,
                     .group = spec_.gran == Granularity::kGroup ? spec_.group : cols};
    const int64_t groups = p.groups();
    p.codes.resize(static_cast<size_t>(rows * cols));
    p.scales.resize(static_cast<size_t>(rows * groups));
    p.zeros.resize(static_cast<size_t>(rows * groups));
    const size_t rb = row_bytes(cols);
    const std::byte* trailer = data + rows * rb;
    for (int64_t r = 0; r < rows; ++r) {
      const std::byte* row = data + r * rb;
      uint8_t* u = p.codes.data() + r * cols;
      for (int64_t g = 0; g < groups; ++g) {
        QuantParams q;
        if (spec_.gran == Granularity::kGroup) {
          const std::byte* block = row + g * traits_.block_bytes;
          q = read_meta(block);
          unpack_codes(block + meta_bytes_, spec_.group, spec_.bits, u + g * spec_.group);
        } else {
          q = read_meta(trailer + (spec_.gran == Granularity::kChannel ? r * meta_bytes_ : 0));
          unpack_codes(row, cols, spec_.bits, u);
        }
        p.scales[static_cast<size_t>(r * groups + g)] = q.scale;
        p.zeros[static_cast<size_t>(r * groups + g)] = static_cast<uint8_t>(offset_ + q.zero_point);
      }
    }
    return p;
  }
  std::vector<std::byte> from_parts(const IntTensorParts& p, std::string_view tensor_name) const {
    const int64_t rows = p.rows, cols = p.cols;
    const int64_t group = spec_.gran == Granularity::kGroup ? spec_.group : cols;
    if (p.bits != spec_.bits || p.group != group || !can_store(rows, cols) ||
        p.codes.size() != static_cast<size_t>(rows * cols) || p.scales.size() != static_cast<size_t>(rows * cols / group) ||
        p.zeros.size() != p.scales.size()) {
      fail(ErrorKind::kInvalidArgument, "tensor '{}': {}-bit codes in groups of {} for a [{}, {}] tensor do not fit {}",
           tensor_name, p.bits, p.group, rows, cols, traits_.name);
    }
    const int64_t groups = cols / group;
    std::vector<std::byte> out(tensor_bytes(rows, cols));
    const size_t rb = row_bytes(cols);
    std::byte* trailer = out.data() + rows * rb;
    for (int64_t r = 0; r < rows; ++r) {
      const uint8_t* u = p.codes.data() + r * cols;
      for (int64_t c = 0; c < cols; ++c) {
        if (u[c] >> spec_.bits) {
          fail(ErrorKind::kInvalidArgument, "tensor '{}': row {} column {}: code {} is out of range for {} bits",
               tensor_name, r, c, u[c], spec_.bits);
        }
      }
      for (int64_t g = 0; g < groups; ++g) {
        const size_t i = static_cast<size_t>(r * groups + g);
        const float scale = p.scales[i];
        const int z = p.zeros[i];
        const bool scale_ok = std::isfinite(scale) && (spec_.f32 || f16_to_f32(f32_to_f16(scale)) == scale);
        const bool zero_ok = spec_.symmetric ? z == offset_ : z < (1 << spec_.bits);
        const bool shared_ok = spec_.gran != Granularity::kTensor || (p.scales[i] == p.scales[0] && z == p.zeros[0]);
        if (!scale_ok || !zero_ok || !shared_ok) {
          fail(ErrorKind::kInvalidArgument, "tensor '{}': row {} group {}: {} {} cannot be stored in {}", tensor_name, r,
               g, !scale_ok || !shared_ok ? "scale" : "zero point", !scale_ok || !shared_ok ? scale : static_cast<float>(z),
               traits_.name);
        }
        const QuantParams q{.scale = scale, .zero_point = spec_.symmetric ? 0 : z};
        if (spec_.gran == Granularity::kGroup) {
          std::byte* block = out.data() + r * rb + g * traits_.block_bytes;
          write_meta(q, block);
          pack_codes(u + g * group, group, spec_.bits, block + meta_bytes_);
        } else {
          write_meta(q, trailer + (spec_.gran == Granularity::kChannel ? r * meta_bytes_ : 0));
          pack_codes(u, cols, spec_.bits, out.data() + r * rb);
        }
      }
    }
    return out;
  }

  size_t trailer_bytes(int64_t rows, int64_t) const override {
    switch (spec_.gran) {
      case Granularity::kTensor:
        return meta_bytes_;
      case Granularity::kChannel:
        return static_cast<size_t>(rows) * meta_bytes_;
      case Granularity::kGroup:
        return 0;
    }
    return 0;
  }

  void dequantize_rows(const std::byte* data, int64_t rows, int64_t cols, int64_t r0, int64_t r1,
                       float* out) const override {
    decode_rows(data, rows, cols, r0, r1, out, /*fast=*/true);
  }
  void dequantize_rows_reference(const std::byte* data, int64_t rows, int64_t cols, int64_t r0, int64_t r1,
                                 float* out) const override {
    decode_rows(data, rows, cols, r0, r1, out, /*fast=*/false);
  }

 protected:
  void do_quantize(ThreadPool* pool, const float* src, int64_t rows, int64_t cols, std::byte* dst,
                   const QuantizeOptions& options) const override {
    if (!spec_.f32) check_f16_range(src, rows * cols, options.tensor_name);
    const RangeChooser& chooser = options.range != nullptr ? *options.range : min_max_range();
    const size_t rb = row_bytes(cols);
    std::byte* trailer = dst + rows * rb;
    QuantParams tensor_params;
    if (spec_.gran == Granularity::kTensor) {
      tensor_params = chooser.choose(RangeInput{.x = std::span<const float>(src, static_cast<size_t>(rows * cols)),
                                                .weights = options.importance,
                                                .weight_period = static_cast<size_t>(cols)},
                                     grid_);
      write_meta(tensor_params, trailer);
    }
    auto do_rows = [&](int64_t a, int64_t b) {
      std::vector<uint8_t> codes(static_cast<size_t>(cols));
      for (int64_t r = a; r < b; ++r) {
        const float* x = src + r * cols;
        std::byte* row = dst + r * rb;
        if (spec_.gran == Granularity::kGroup) {
          const size_t bb = traits_.block_bytes;
          for (int64_t g = 0; g < cols / spec_.group; ++g) {
            const float* xg = x + g * spec_.group;
            const QuantParams p = chooser.choose(
                RangeInput{.x = std::span<const float>(xg, static_cast<size_t>(spec_.group)),
                           .weights = options.importance != nullptr ? options.importance + g * spec_.group : nullptr,
                           .weight_period = static_cast<size_t>(spec_.group)},
                grid_);
            write_meta(p, row + g * bb);
            encode(xg, spec_.group, p, codes.data(), row + g * bb + meta_bytes_);
          }
        } else {
          QuantParams p = tensor_params;
          if (spec_.gran == Granularity::kChannel) {
            p = chooser.choose(RangeInput{.x = std::span<const float>(x, static_cast<size_t>(cols)),
                                          .weights = options.importance,
                                          .weight_period = static_cast<size_t>(cols)},
                               grid_);
            write_meta(p, trailer + r * meta_bytes_);
          }
          encode(x, cols, p, codes.data(), row);
        }
      }
    };
    for_each_row_range(pool, rows, cols, do_rows);
  }

 private:
  // fp16 scales top out at 65504; refuse (before writing anything) a tensor whose min-max scale
  // would pass it rather than clip it silently. Choosers only narrow the min-max range.
  void check_f16_range(const float* x, int64_t n, std::string_view tensor_name) const {
    float lo = 0, hi = 0;
    for (int64_t i = 0; i < n; ++i) {
      lo = std::min(lo, x[i]);
      hi = std::max(hi, x[i]);
    }
    const float span = spec_.symmetric ? std::max(-lo, hi) : hi - lo;
    const float need = span / static_cast<float>(grid_.qmax - (spec_.symmetric ? 0 : grid_.qmin));
    if (need > kMaxF16) {
      fail(ErrorKind::kInvalidArgument,
           "tensor '{}': values in [{}, {}] need a scale of {} for {}, more than fp16 holds (65504); use {}-f32",
           tensor_name, lo, hi, need, traits_.name, traits_.name);
    }
  }

  void write_meta(const QuantParams& p, std::byte* out) const {
    if (spec_.f32) {
      std::memcpy(out, &p.scale, 4);
    } else {
      const uint16_t h = f32_to_f16(p.scale);  // exact: the scale is already an fp16 value
      std::memcpy(out, &h, 2);
    }
    if (!spec_.symmetric) out[spec_.f32 ? 4 : 2] = static_cast<std::byte>(p.zero_point);
  }

  QuantParams read_meta(const std::byte* in) const {
    QuantParams p;
    if (spec_.f32) {
      std::memcpy(&p.scale, in, 4);
    } else {
      p.scale = load_f16(in);
    }
    if (!spec_.symmetric) p.zero_point = static_cast<int32_t>(in[spec_.f32 ? 4 : 2]);
    return p;
  }

  void encode(const float* x, int64_t n, const QuantParams& p, uint8_t* codes, std::byte* out) const {
    const float inv = inverse_scale(p);
    for (int64_t i = 0; i < n; ++i) codes[i] = static_cast<uint8_t>(quantize_value(x[i], inv, p, grid_) + offset_);
    pack_codes(codes, n, spec_.bits, out);
  }

  // Scalar: dequantize_value per code. Fast (AVX2): the same integer subtraction, conversion and
  // one multiplication per element, eight at a time, so the floats are identical.
  void decode(const std::byte* in, int64_t n, const QuantParams& p, uint8_t* codes, float* out, bool fast) const {
    unpack_codes(in, n, spec_.bits, codes);
    int64_t i = 0;
    if (fast) {
      const __m256i bias = _mm256_set1_epi32(offset_ + p.zero_point);
      const __m256 scale = _mm256_set1_ps(p.scale);
      for (; i + 8 <= n; i += 8) {
        const __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + i)));
        const __m256 q = _mm256_cvtepi32_ps(_mm256_sub_epi32(c, bias));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(scale, q));
      }
    }
    for (; i < n; ++i) out[i] = dequantize_value(static_cast<int32_t>(codes[i]) - offset_, p);
  }

  void decode_rows(const std::byte* data, int64_t rows, int64_t cols, int64_t r0, int64_t r1, float* out,
                   bool fast) const {
    assert(0 <= r0 && r0 <= r1 && r1 <= rows);
    const size_t rb = row_bytes(cols);
    const std::byte* trailer = data + rows * rb;
    std::vector<uint8_t> codes(static_cast<size_t>(cols));
    for (int64_t r = r0; r < r1; ++r) {
      const std::byte* row = data + r * rb;
      float* y = out + (r - r0) * cols;
      switch (spec_.gran) {
        case Granularity::kGroup: {
          const size_t bb = traits_.block_bytes;
          for (int64_t g = 0; g < cols / spec_.group; ++g) {
            decode(row + g * bb + meta_bytes_, spec_.group, read_meta(row + g * bb), codes.data(), y + g * spec_.group,
                   fast);
          }
          break;
        }
        case Granularity::kChannel:
          decode(row, cols, read_meta(trailer + r * meta_bytes_), codes.data(), y, fast);
          break;
        case Granularity::kTensor:
          decode(row, cols, read_meta(trailer), codes.data(), y, fast);
          break;
      }
    }
  }

  IntSpec spec_;
  IntFormatCodec int_codec_;
  QuantGrid grid_;
  int32_t offset_ = 0;
  size_t meta_bytes_ = 0;
  FormatTraits traits_;
  std::unique_ptr<GridCodec> grid_codec_;
};

void IntFormatCodec::decode_row(const std::byte* data, int64_t rows, int64_t cols, int64_t r, uint8_t* u, float* scale,
                                float* offset) const {
  format_.decode_int_row(data, rows, cols, r, u, scale, offset);
}

}  // namespace

FormatList make_int_formats() {
  FormatList list;
  for (int bits : {2, 3, 4, 5, 6, 8}) {
    for (int gi = 0; gi < 6; ++gi) {
      for (bool sym : {true, false}) {
        for (bool f32 : {false, true}) {
          IntSpec s{.bits = bits, .symmetric = sym, .f32 = f32};
          s.gran = gi == 0 ? Granularity::kTensor : gi == 1 ? Granularity::kChannel : Granularity::kGroup;
          s.group = gi >= 2 ? int64_t{32} << (gi - 2) : 0;
          auto format = std::make_unique<IntFormat>(s);
          format->make_grid_codec();
          list.push_back(std::move(format));
        }
      }
    }
  }
  return list;
}

}  // namespace calq

// ---- int_layout.h ----
namespace calq {

std::optional<IntLayout> int_layout(const Format& format) {
  const auto* f = dynamic_cast<const IntFormat*>(&format);
  if (f == nullptr) return std::nullopt;
  return f->layout();
}

IntTensorParts int_tensor_parts(const Format& format, std::span<const std::byte> bytes, int64_t rows, int64_t cols) {
  const auto* f = dynamic_cast<const IntFormat*>(&format);
  assert(f != nullptr && bytes.size() == format.tensor_bytes(rows, cols));
  return f->parts(bytes.data(), rows, cols);
}

std::vector<std::byte> int_tensor_bytes(const Format& format, const IntTensorParts& parts,
                                        std::string_view tensor_name) {
  const auto* f = dynamic_cast<const IntFormat*>(&format);
  assert(f != nullptr);
  return f->from_parts(parts, tensor_name);
}

std::string int_format_name(int bits, int64_t group, bool symmetric) {
  return "int" + std::to_string(bits) + "-" + (group == 0 ? std::string("pc") : "g" + std::to_string(group)) +
         (symmetric ? "-sym" : "-asym");
}

}  // namespace calq
