// Grid codecs of the integer formats (int_format.cpp): int<b>-<pc|gN>-<sym|asym>[-f32].
//
// The codec mirrors IntFormat exactly: the same QuantGrid (qmin/qmax, fp16 or fp32 scale storage),
// the same chooser call per group (QuantizeOptions::range or min-max, with the importance of the
// group's columns), the same quantize_value / dequantize_value arithmetic and the same bytes
// (meta = scale then, for asym, one zero-point byte; codes LSB-first as in int_pack.h; gN rows of
// [meta][codes] blocks, pc rows of codes followed by a trailer of one meta per row).
//
// Per-tensor formats (-pt) have no codec: their one scale is chosen from the whole tensor, which
// a codec that chooses parameters per row range (GridCodec's contract) cannot reproduce.
//
// fp16 range: IntFormat refuses a tensor whose min-max scale over the WHOLE tensor would pass
// 65504; the codec sees one block at a time and refuses a block whose own min-max scale would
// (asym tensors whose extremes sit in different groups pass here and fail in Format::quantize).
#include <algorithm>
#include <cassert>
#include <charconv>
#include <cmath>
#include <cstring>
#include <optional>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "formats/grid.h"
#include "formats/int_pack.h"
#include "formats/range.h"

namespace calq {

std::unique_ptr<GridCodec> make_int_grid_codec(const Format& format);

namespace {

constexpr float kMaxF16 = 65504.0f;

float store_f16(float s) { return f16_to_f32(f32_to_f16(std::min(s, kMaxF16))); }

struct IntLayout {
  int bits = 4;
  int64_t group = 0;  // 0: per channel (one group per row)
  bool symmetric = false;
  bool f32 = false;
};

// Parses a registered int format's name; nullopt for the per-tensor ones (no codec).
std::optional<IntLayout> parse_int_name(std::string_view name) {
  IntLayout s;
  if (!name.starts_with("int")) return std::nullopt;
  name.remove_prefix(3);
  auto [p, ec] = std::from_chars(name.data(), name.data() + name.size(), s.bits);
  if (ec != std::errc{} || *p != '-') return std::nullopt;
  name.remove_prefix(static_cast<size_t>(p - name.data()) + 1);
  if (name.starts_with("pc-")) {
    s.group = 0;
    name.remove_prefix(3);
  } else if (name.starts_with("g")) {
    auto [q, ec2] = std::from_chars(name.data() + 1, name.data() + name.size(), s.group);
    if (ec2 != std::errc{} || *q != '-' || s.group <= 0) return std::nullopt;
    name.remove_prefix(static_cast<size_t>(q - name.data()) + 1);
  } else {
    return std::nullopt;  // "pt" (per tensor) or unknown
  }
  if (name.starts_with("sym")) {
    s.symmetric = true;
    name.remove_prefix(3);
  } else if (name.starts_with("asym")) {
    name.remove_prefix(4);
  } else {
    return std::nullopt;
  }
  if (name == "-f32") {
    s.f32 = true;
  } else if (!name.empty()) {
    return std::nullopt;
  }
  return s;
}

class IntGridState final : public GridState {
 public:
  IntGridState(int64_t rows, int64_t cols, int64_t group, const QuantizeOptions& o)
      : rows_(rows),
        cols_(cols),
        blocks_(cols / group),
        options_(o),
        params_(static_cast<size_t>(rows * blocks_)),
        codes_(static_cast<size_t>(rows * cols)) {}

  int64_t rows_, cols_, blocks_;
  const QuantizeOptions& options_;
  std::vector<QuantParams> params_;  // [rows, blocks]
  std::vector<uint8_t> codes_;       // [rows, cols], stored codes (q + offset)
};

class IntGridCodec final : public GridCodec {
 public:
  IntGridCodec(const Format& format, const IntLayout& s) : format_(format), spec_(s) {
    const int half = 1 << (s.bits - 1);
    grid_ = QuantGrid{.qmin = s.symmetric ? -(half - 1) : 0,
                      .qmax = s.symmetric ? half - 1 : (1 << s.bits) - 1,
                      .symmetric = s.symmetric,
                      .store_scale = s.f32 ? nullptr : &store_f16};
    offset_ = s.symmetric ? half : 0;
    meta_bytes_ = (s.f32 ? 4u : 2u) + (s.symmetric ? 0u : 1u);
    // The name parsed must describe the registered layout.
    assert(format.traits().block_size == (s.group == 0 ? 8 : s.group));
    assert(format.traits().block_bytes ==
           (s.group == 0 ? 0 : meta_bytes_) + static_cast<size_t>(format.traits().block_size * s.bits / 8));
  }

  const Format& format() const override { return format_; }
  int64_t param_cols(int64_t cols) const override { return spec_.group == 0 ? cols : spec_.group; }
  int levels() const override { return grid_.qmax - grid_.qmin + 1; }

  std::unique_ptr<GridState> start(int64_t rows, int64_t cols, const QuantizeOptions& options) const override {
    format_.check_shape(rows, cols, options.tensor_name);
    if (options.importance != nullptr) {
      for (int64_t j = 0; j < cols; ++j) {
        if (!std::isfinite(options.importance[j]) || options.importance[j] < 0) {
          fail(ErrorKind::kInvalidArgument, "tensor '{}': importance weight {} of column {} is not finite and >= 0",
               options.tensor_name, options.importance[j], j);
        }
      }
    }
    return std::make_unique<IntGridState>(rows, cols, param_cols(cols), options);
  }

  void choose(GridState& base, int64_t block, int64_t r0, int64_t r1, const float* x, int64_t ld) const override {
    auto& st = static_cast<IntGridState&>(base);
    assert(0 <= block && block < st.blocks_ && 0 <= r0 && r0 <= r1 && r1 <= st.rows_);
    const int64_t n = param_cols(st.cols_);
    const QuantizeOptions& o = st.options_;
    const RangeChooser& chooser = o.range != nullptr ? *o.range : min_max_range();
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + (r - r0) * ld;
      check_block(xr, n, r, block * n, o.tensor_name);
      st.params_[static_cast<size_t>(r * st.blocks_ + block)] =
          chooser.choose(RangeInput{.x = std::span<const float>(xr, static_cast<size_t>(n)),
                                    .weights = o.importance != nullptr ? o.importance + block * n : nullptr,
                                    .weight_period = static_cast<size_t>(n)},
                         grid_);
    }
  }

  void round_column(GridState& base, int64_t col, int64_t r0, int64_t r1, const float* in, int64_t stride,
                    float* out) const override {
    auto& st = static_cast<IntGridState&>(base);
    assert(0 <= col && col < st.cols_ && 0 <= r0 && r0 <= r1 && r1 <= st.rows_);
    const int64_t block = col / param_cols(st.cols_);
    for (int64_t r = r0; r < r1; ++r) {
      const float v = in[(r - r0) * stride];
      if (!std::isfinite(v)) {
        fail(ErrorKind::kInvalidArgument, "tensor '{}': non-finite value {} at row {}, column {}; cannot quantize to {}",
             st.options_.tensor_name, v, r, col, format_.name());
      }
      const QuantParams& p = st.params_[static_cast<size_t>(r * st.blocks_ + block)];
      const int32_t q = quantize_value(v, inverse_scale(p), p, grid_);
      st.codes_[static_cast<size_t>(r * st.cols_ + col)] = static_cast<uint8_t>(q + offset_);
      out[(r - r0) * stride] = dequantize_value(q, p);
    }
  }

  void pack(const GridState& base, std::span<std::byte> dst) const override {
    const auto& st = static_cast<const IntGridState&>(base);
    assert(dst.size() == format_.tensor_bytes(st.rows_, st.cols_));
    const size_t rb = format_.row_bytes(st.cols_);
    const int64_t n = param_cols(st.cols_);
    const size_t code_bytes = static_cast<size_t>(n * spec_.bits / 8);
    std::byte* trailer = dst.data() + st.rows_ * rb;
    for (int64_t r = 0; r < st.rows_; ++r) {
      std::byte* row = dst.data() + r * rb;
      const uint8_t* codes = st.codes_.data() + r * st.cols_;
      for (int64_t b = 0; b < st.blocks_; ++b) {
        const QuantParams& p = st.params_[static_cast<size_t>(r * st.blocks_ + b)];
        if (spec_.group == 0) {  // per channel: codes in the row, meta in the trailer
          write_meta(p, trailer + r * meta_bytes_);
          pack_codes(codes, n, spec_.bits, row);
        } else {
          std::byte* blk = row + b * (meta_bytes_ + code_bytes);
          write_meta(p, blk);
          pack_codes(codes + b * n, n, spec_.bits, blk + meta_bytes_);
        }
      }
    }
  }

 private:
  // Finite values, and (fp16 scales) a min-max scale that fp16 can hold; see the file comment.
  void check_block(const float* x, int64_t n, int64_t row, int64_t col0, std::string_view tensor_name) const {
    float lo = 0, hi = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (!std::isfinite(x[i])) {
        fail(ErrorKind::kInvalidArgument, "tensor '{}': non-finite value {} at row {}, column {}; cannot quantize to {}",
             tensor_name, x[i], row, col0 + i, format_.name());
      }
      lo = std::min(lo, x[i]);
      hi = std::max(hi, x[i]);
    }
    if (spec_.f32) return;
    const float span = spec_.symmetric ? std::max(-lo, hi) : hi - lo;
    const float need = span / static_cast<float>(grid_.qmax - (spec_.symmetric ? 0 : grid_.qmin));
    if (need > kMaxF16) {
      fail(ErrorKind::kInvalidArgument,
           "tensor '{}': values in [{}, {}] need a scale of {} for {}, more than fp16 holds (65504); use {}-f32",
           tensor_name, lo, hi, need, format_.name(), format_.name());
    }
  }

  void write_meta(const QuantParams& p, std::byte* out) const {
    if (spec_.f32) {
      std::memcpy(out, &p.scale, 4);
    } else {
      const uint16_t h = f32_to_f16(p.scale);  // exact: the chooser returned an fp16 value
      std::memcpy(out, &h, 2);
    }
    if (!spec_.symmetric) out[spec_.f32 ? 4 : 2] = static_cast<std::byte>(p.zero_point);
  }

  const Format& format_;
  IntLayout spec_;
  QuantGrid grid_;
  int32_t offset_ = 0;
  size_t meta_bytes_ = 0;
};

}  // namespace

// The codec of an int format (called by int_format.cpp once the format is made); nullptr for the
// per-tensor ones.
std::unique_ptr<GridCodec> make_int_grid_codec(const Format& format) {
  const auto layout = parse_int_name(format.name());
  if (!layout) return nullptr;
  return std::make_unique<IntGridCodec>(format, *layout);
}

}  // namespace calq
