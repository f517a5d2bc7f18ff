#include "grad/fake_quant_int.h"

#include <algorithm>
#include <cassert>
#include <charconv>
#include <cmath>
#include <cstring>

#include "core/dtype.h"
#include "core/error.h"
#include "formats/int_pack.h"

namespace calq::grad {
namespace {

constexpr float kMaxF16 = 65504.0f;

float store_f16(float s) { return f16_to_f32(f32_to_f16(std::min(s, kMaxF16))); }

size_t meta_bytes(const IntLayout& l) { return (l.f32 ? 4u : 2u) + (l.symmetric ? 0u : 1u); }
int32_t code_offset(const IntLayout& l) { return l.symmetric ? 1 << (l.bits - 1) : 0; }

// Parses "int<b>-<pt|pc|gN>-<sym|asym>[-f32]" (int_format.cpp's names); false when it is not one.
bool parse(std::string_view name, IntLayout& s) {
  if (!name.starts_with("int")) return false;
  name.remove_prefix(3);
  auto [p, ec] = std::from_chars(name.data(), name.data() + name.size(), s.bits);
  if (ec != std::errc{} || p == name.data() + name.size() || *p != '-' || s.bits < 2 || s.bits > 8) return false;
  name.remove_prefix(static_cast<size_t>(p - name.data()) + 1);
  if (name.starts_with("pt-")) {
    s.granularity = IntGranularity::kTensor;
    name.remove_prefix(3);
  } else if (name.starts_with("pc-")) {
    s.granularity = IntGranularity::kChannel;
    name.remove_prefix(3);
  } else if (name.starts_with("g")) {
    s.granularity = IntGranularity::kGroup;
    auto [q, ec2] = std::from_chars(name.data() + 1, name.data() + name.size(), s.group);
    if (ec2 != std::errc{} || q == name.data() + name.size() || *q != '-' || s.group <= 0) return false;
    name.remove_prefix(static_cast<size_t>(q - name.data()) + 1);
  } else {
    return false;
  }
  if (name.starts_with("sym")) {
    s.symmetric = true;
    name.remove_prefix(3);
  } else if (name.starts_with("asym")) {
    s.symmetric = false;
    name.remove_prefix(4);
  } else {
    return false;
  }
  s.f32 = name == "-f32";
  if (!s.f32 && !name.empty()) return false;
  const int half = 1 << (s.bits - 1);
  s.grid = QuantGrid{.qmin = s.symmetric ? -(half - 1) : 0,
                     .qmax = s.symmetric ? half - 1 : (1 << s.bits) - 1,
                     .symmetric = s.symmetric,
                     .store_scale = s.f32 ? nullptr : &store_f16};
  return true;
}

// Where group g's meta sits in the tensor's bytes.
size_t meta_offset(const IntLayout& l, const Format& f, int64_t rows, int64_t cols, int64_t g) {
  switch (l.granularity) {
    case IntGranularity::kGroup: {
      const int64_t per_row = l.groups_per_row(cols);
      return static_cast<size_t>(g / per_row) * f.row_bytes(cols) +
             static_cast<size_t>(g % per_row) * f.traits().block_bytes;
    }
    case IntGranularity::kChannel: return static_cast<size_t>(rows) * f.row_bytes(cols) + g * meta_bytes(l);
    case IntGranularity::kTensor: return static_cast<size_t>(rows) * f.row_bytes(cols);
  }
  return 0;
}

QuantParams read_meta(const IntLayout& l, const std::byte* in) {
  QuantParams p;
  if (l.f32) {
    std::memcpy(&p.scale, in, 4);
  } else {
    uint16_t h;
    std::memcpy(&h, in, 2);
    p.scale = f16_to_f32(h);
  }
  if (!l.symmetric) p.zero_point = static_cast<int32_t>(in[l.f32 ? 4 : 2]);
  return p;
}

void write_meta(const IntLayout& l, const QuantParams& p, std::byte* out) {
  if (l.f32) {
    std::memcpy(out, &p.scale, 4);
  } else {
    const uint16_t h = f32_to_f16(p.scale);  // exact: checked to be an fp16 value
    std::memcpy(out, &h, 2);
  }
  if (!l.symmetric) out[l.f32 ? 4 : 2] = static_cast<std::byte>(p.zero_point);
}

[[noreturn]] void fail_non_finite(std::string_view tensor, float v, int64_t r, int64_t c) {
  fail(ErrorKind::kInvalidArgument, "tensor '{}': non-finite weight {} at row {}, column {}", tensor, v, r, c);
}

}  // namespace

int64_t IntLayout::num_groups(int64_t rows, int64_t cols) const {
  switch (granularity) {
    case IntGranularity::kTensor: return 1;
    case IntGranularity::kChannel: return rows;
    case IntGranularity::kGroup: return rows * (cols / group);
  }
  return 0;
}

int64_t IntLayout::group_of(int64_t r, int64_t c, int64_t cols) const {
  switch (granularity) {
    case IntGranularity::kTensor: return 0;
    case IntGranularity::kChannel: return r;
    case IntGranularity::kGroup: return r * (cols / group) + c / group;
  }
  return 0;
}

bool is_int_format(const Format& format) {
  IntLayout l;
  return format.traits().family == "int" && parse(format.name(), l);
}

IntLayout int_layout(const Format& format) {
  IntLayout l;
  if (format.traits().family != "int" || !parse(format.name(), l)) {
    fail(ErrorKind::kInvalidArgument, "format '{}' is not an integer format (int<bits>-<pt|pc|gN>-<sym|asym>)",
         format.name());
  }
  return l;
}

void for_row_chunks(ThreadPool& pool, int64_t rows, int64_t cols, const std::function<void(int64_t, int64_t)>& fn) {
  // Rows are independent; the chunking only sets the hand-off granularity.
  const size_t min_rows = static_cast<size_t>(std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1)));
  pool.parallel_for(0, static_cast<size_t>(rows), Grain{.min_items = min_rows},
                    [&](size_t a, size_t b) { fn(static_cast<int64_t>(a), static_cast<int64_t>(b)); });
}

std::vector<QuantParams> choose_int_params(const Format& format, const float* w, int64_t rows, int64_t cols,
                                           const QuantizeOptions& options) {
  const IntLayout l = int_layout(format);
  // The format's own encoder chooses (and validates); its bytes hold the parameters as stored.
  std::vector<std::byte> bytes(format.tensor_bytes(rows, cols));
  format.quantize_reference(w, rows, cols, bytes, options);
  std::vector<QuantParams> params(static_cast<size_t>(l.num_groups(rows, cols)));
  for (size_t g = 0; g < params.size(); ++g) {
    params[g] = read_meta(l, bytes.data() + meta_offset(l, format, rows, cols, static_cast<int64_t>(g)));
  }
  return params;
}

std::vector<QuantParams> read_int_params(const Format& format, std::span<const std::byte> bytes, int64_t rows,
                                         int64_t cols, std::string_view tensor_name) {
  const IntLayout l = int_layout(format);
  format.check_shape(rows, cols, tensor_name);
  if (bytes.size() != format.tensor_bytes(rows, cols)) {
    fail(ErrorKind::kInvalidArgument, "tensor '{}': {} bytes for {} [{}, {}], expected {}", tensor_name, bytes.size(),
         format.name(), rows, cols, format.tensor_bytes(rows, cols));
  }
  std::vector<QuantParams> params(static_cast<size_t>(l.num_groups(rows, cols)));
  for (size_t g = 0; g < params.size(); ++g) {
    params[g] = read_meta(l, bytes.data() + meta_offset(l, format, rows, cols, static_cast<int64_t>(g)));
  }
  return params;
}

void int_fake_quant(ThreadPool& pool, const IntLayout& l, std::span<const QuantParams> params, const float* w,
                    int64_t rows, int64_t cols, float* w_hat, uint8_t* mask, std::string_view tensor_name) {
  assert(params.size() == static_cast<size_t>(l.num_groups(rows, cols)));
  const float qmin = static_cast<float>(l.grid.qmin), qmax = static_cast<float>(l.grid.qmax);
  for_row_chunks(pool, rows, cols, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t i = r * cols + c;
        if (!std::isfinite(w[i])) fail_non_finite(tensor_name, w[i], r, c);
        const QuantParams& p = params[static_cast<size_t>(l.group_of(r, c, cols))];
        const float inv = inverse_scale(p);
        w_hat[i] = dequantize_value(quantize_value(w[i], inv, p, l.grid), p);
        if (mask != nullptr) {
          const float v = w[i] * inv + static_cast<float>(p.zero_point);
          mask[i] = v >= qmin && v <= qmax ? 1 : 0;
        }
      }
    }
  });
}

std::vector<std::byte> encode_with_params(const Format& format, const float* w, int64_t rows, int64_t cols,
                                          std::span<const QuantParams> params, std::string_view tensor_name) {
  const IntLayout l = int_layout(format);
  format.check_shape(rows, cols, tensor_name);
  const int64_t groups = l.num_groups(rows, cols);
  if (params.size() != static_cast<size_t>(groups)) {
    fail(ErrorKind::kInvalidArgument, "tensor '{}': {} has {} parameter groups for [{}, {}], got {}", tensor_name,
         format.name(), groups, rows, cols, params.size());
  }
  for (int64_t g = 0; g < groups; ++g) {
    const QuantParams& p = params[static_cast<size_t>(g)];
    if (!std::isfinite(p.scale) || p.scale < 0 || l.store_scale(p.scale) != p.scale) {
      fail(ErrorKind::kInvalidArgument, "tensor '{}': scale {} of group {} cannot be stored by {} (finite, >= 0, {})",
           tensor_name, p.scale, g, format.name(), l.f32 ? "fp32" : "an fp16 value");
    }
    if (p.zero_point < l.grid.qmin || p.zero_point > l.grid.qmax || (l.symmetric && p.zero_point != 0)) {
      fail(ErrorKind::kInvalidArgument, "tensor '{}': zero point {} of group {} is outside {}'s range [{}, {}]",
           tensor_name, p.zero_point, g, format.name(), l.symmetric ? 0 : l.grid.qmin, l.symmetric ? 0 : l.grid.qmax);
    }
  }
  std::vector<std::byte> out(format.tensor_bytes(rows, cols));
  for (int64_t g = 0; g < groups; ++g) {
    write_meta(l, params[static_cast<size_t>(g)], out.data() + meta_offset(l, format, rows, cols, g));
  }
  const int64_t gc = l.group_cols(cols);
  const size_t mb = l.granularity == IntGranularity::kGroup ? meta_bytes(l) : 0;
  const size_t code_bytes = static_cast<size_t>(gc * l.bits / 8);
  const int32_t offset = code_offset(l);
  std::vector<uint8_t> codes(static_cast<size_t>(gc));
  for (int64_t r = 0; r < rows; ++r) {
    std::byte* row = out.data() + static_cast<size_t>(r) * format.row_bytes(cols);
    for (int64_t k = 0; k < cols / gc; ++k) {
      const QuantParams& p = params[static_cast<size_t>(l.group_of(r, k * gc, cols))];
      const float inv = inverse_scale(p);
      for (int64_t j = 0; j < gc; ++j) {
        const float v = w[r * cols + k * gc + j];
        if (!std::isfinite(v)) fail_non_finite(tensor_name, v, r, k * gc + j);
        codes[static_cast<size_t>(j)] = static_cast<uint8_t>(quantize_value(v, inv, p, l.grid) + offset);
      }
      pack_codes(codes.data(), gc, l.bits, row + k * (mb + code_bytes) + mb);
    }
  }
  return out;
}

}  // namespace calq::grad
