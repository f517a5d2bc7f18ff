// GPTQ, AWQ and compressed-tensors packing (see hf_quant_pack.h for the layouts and their sources).
#include "io/hf_quant_pack.h"

#include <fmt/format.h>

#include <array>
#include <cstring>

#include "core/dtype.h"
#include "core/error.h"

namespace calq::io {
namespace {

int32_t load_i32(std::span<const std::byte> bytes, size_t i) {
  int32_t v;
  std::memcpy(&v, bytes.data() + i * 4, 4);
  return v;
}

void check_size(std::span<const std::byte> bytes, size_t elements, size_t elem_size, std::string_view tensor,
                std::string_view what) {
  if (bytes.size() != elements * elem_size) {
    fail(ErrorKind::kFormat, "tensor '{}': {} holds {} bytes, the shape implies {}", tensor, what, bytes.size(),
         elements * elem_size);
  }
}

// fp16 bits of a scale, which must be an fp16 value.
uint16_t f16_bits(float s, std::string_view tensor) {
  const uint16_t h = f32_to_f16(s);
  if (!(f16_to_f32(h) == s)) {
    fail(ErrorKind::kInvalidArgument,
         "tensor '{}': scale {} is not an fp16 value (these checkpoints store fp16 scales; use a format with "
         "fp16 scales, not -f32)",
         tensor, s);
  }
  return h;
}

// GPTQ's bit stream: `count` values (a multiple of 32) of `bits` bits, each 32 consecutive ones
// over `bits` words, value i of a chunk at bits [i·bits, i·bits + bits). get(i) gives value i; the
// words come out in order through put(word index, word).
template <typename Get, typename Put>
void pack_stream(int64_t count, int bits, Get get, Put put) {
  for (int64_t c = 0; c < count / 32; ++c) {
    std::array<uint32_t, 8> words{};
    for (int i = 0; i < 32; ++i) {
      const auto v = static_cast<uint64_t>(get(c * 32 + i));
      const int bit = i * bits;
      words[static_cast<size_t>(bit / 32)] |= static_cast<uint32_t>(v << (bit % 32));
      if (bit % 32 + bits > 32) words[static_cast<size_t>(bit / 32 + 1)] |= static_cast<uint32_t>(v >> (32 - bit % 32));
    }
    for (int w = 0; w < bits; ++w) put(c * bits + w, static_cast<int32_t>(words[static_cast<size_t>(w)]));
  }
}

template <typename Word, typename Set>
void unpack_stream(int64_t count, int bits, Word word, Set set) {
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  for (int64_t c = 0; c < count / 32; ++c) {
    std::array<uint32_t, 9> words{};
    for (int w = 0; w < bits; ++w) words[static_cast<size_t>(w)] = static_cast<uint32_t>(word(c * bits + w));
    for (int i = 0; i < 32; ++i) {
      const int bit = i * bits;
      const uint64_t lo = words[static_cast<size_t>(bit / 32)] >> (bit % 32);
      const uint64_t hi = static_cast<uint64_t>(words[static_cast<size_t>(bit / 32 + 1)]) << (32 - bit % 32);
      set(c * 32 + i, static_cast<uint8_t>((lo | hi) & mask));
    }
  }
}

void check_gptq_shape(int bits, int64_t n, int64_t k, std::string_view tensor) {
  if (bits != 2 && bits != 3 && bits != 4 && bits != 8) {
    fail(ErrorKind::kInvalidArgument, "tensor '{}': GPTQ checkpoints hold 2, 3, 4 or 8 bits, not {}", tensor, bits);
  }
  if (k % 32 != 0 || n % 32 != 0) {
    fail(ErrorKind::kInvalidArgument,
         "tensor '{}': GPTQ packs 32 values per bit stream; the weight [{}, {}] needs both sizes multiples of 32",
         tensor, n, k);
  }
}

}  // namespace

GptqTensors gptq_pack(const IntTensorParts& p, GptqVersion version, std::string_view tensor) {
  const int64_t n = p.rows, k = p.cols, groups = p.groups();
  check_gptq_shape(p.bits, n, k, tensor);
  GptqTensors t{.qweight_rows = k * p.bits / 32, .qzeros_cols = n * p.bits / 32, .groups = groups};
  t.qweight.resize(static_cast<size_t>(t.qweight_rows * n));
  for (int64_t col = 0; col < n; ++col) {
    pack_stream(
        k, p.bits, [&](int64_t i) { return p.codes[static_cast<size_t>(col * k + i)]; },
        [&](int64_t w, int32_t v) { t.qweight[static_cast<size_t>(w * n + col)] = v; });
  }
  const uint32_t mask = (1u << p.bits) - 1;
  t.qzeros.resize(static_cast<size_t>(groups * t.qzeros_cols));
  t.scales.resize(static_cast<size_t>(groups * n));
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t r = 0; r < n; ++r) {
      const size_t i = static_cast<size_t>(r * groups + g);
      t.scales[static_cast<size_t>(g * n + r)] = f16_bits(p.scales[i], tensor);
      if (version == GptqVersion::kV1 && p.zeros[i] == 0) {
        fail(ErrorKind::kInvalidArgument,
             "tensor '{}': output {} group {} has zero point 0, which GPTQ checkpoint format v1 cannot store (it "
             "stores zero − 1); write scheme gptq-v2 (checkpoint_format gptq_v2) or use a symmetric format",
             tensor, r, g);
      }
    }
    pack_stream(
        n, p.bits,
        [&](int64_t r) {
          const uint32_t z = p.zeros[static_cast<size_t>(r * groups + g)];
          return version == GptqVersion::kV1 ? (z - 1) & mask : z;
        },
        [&](int64_t w, int32_t v) { t.qzeros[static_cast<size_t>(g * t.qzeros_cols + w)] = v; });
  }
  t.g_idx.resize(static_cast<size_t>(k));
  for (int64_t c = 0; c < k; ++c) t.g_idx[static_cast<size_t>(c)] = static_cast<int32_t>(c / p.group);
  return t;
}

IntTensorParts gptq_unpack(int bits, int64_t n, int64_t k, int64_t group, GptqVersion version,
                           std::span<const std::byte> qweight, std::span<const std::byte> qzeros,
                           std::span<const float> scales, std::span<const std::byte> g_idx,
                           std::vector<int32_t>& g_idx_out, std::string_view tensor) {
  check_gptq_shape(bits, n, k, tensor);
  if (group == -1) group = k;
  if (group <= 0 || k % group != 0) {
    fail(ErrorKind::kFormat, "tensor '{}': group_size {} does not divide the input size {}", tensor, group, k);
  }
  const int64_t groups = k / group, qrows = k * bits / 32, zcols = n * bits / 32;
  check_size(qweight, static_cast<size_t>(qrows * n), 4, tensor, "qweight");
  check_size(qzeros, static_cast<size_t>(groups * zcols), 4, tensor, "qzeros");
  if (scales.size() != static_cast<size_t>(groups * n)) {
    fail(ErrorKind::kFormat, "tensor '{}': scales hold {} values, the shape implies {}", tensor, scales.size(),
         groups * n);
  }
  check_size(g_idx, static_cast<size_t>(k), 4, tensor, "g_idx");
  IntTensorParts p{.bits = bits, .rows = n, .cols = k, .group = group};
  p.codes.resize(static_cast<size_t>(n * k));
  for (int64_t col = 0; col < n; ++col) {
    unpack_stream(
        k, bits, [&](int64_t w) { return load_i32(qweight, static_cast<size_t>(w * n + col)); },
        [&](int64_t i, uint8_t v) { p.codes[static_cast<size_t>(col * k + i)] = v; });
  }
  p.scales.resize(static_cast<size_t>(n * groups));
  p.zeros.resize(p.scales.size());
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t r = 0; r < n; ++r) {
      p.scales[static_cast<size_t>(r * groups + g)] = scales[static_cast<size_t>(g * n + r)];
    }
    unpack_stream(
        n, bits, [&](int64_t w) { return load_i32(qzeros, static_cast<size_t>(g * zcols + w)); },
        [&](int64_t r, uint8_t v) {
          const int z = version == GptqVersion::kV1 ? v + 1 : v;
          if (z >= (1 << bits)) {
            fail(ErrorKind::kFormat,
                 "tensor '{}': output {} group {}: qzeros holds {}, which checkpoint format v1 reads as zero {} "
                 "(out of range for {} bits: a v1 writer cannot store zero 0)",
                 tensor, r, g, v, z, bits);
          }
          p.zeros[static_cast<size_t>(r * groups + g)] = static_cast<uint8_t>(z);
        });
  }
  g_idx_out.resize(static_cast<size_t>(k));
  for (int64_t c = 0; c < k; ++c) {
    const int32_t gi = load_i32(g_idx, static_cast<size_t>(c));
    if (gi < 0 || gi >= groups) {
      fail(ErrorKind::kFormat, "tensor '{}': g_idx[{}] = {} is outside [0, {})", tensor, c, gi, groups);
    }
    g_idx_out[static_cast<size_t>(c)] = gi;
  }
  return p;
}

bool gidx_is_sequential(std::span<const int32_t> g_idx, int64_t group) {
  for (size_t c = 0; c < g_idx.size(); ++c) {
    if (g_idx[c] != static_cast<int64_t>(c) / group) return false;
  }
  return true;
}

std::vector<float> dequantize_with_gidx(const IntTensorParts& p, std::span<const int32_t> g_idx) {
  const int64_t groups = p.groups();
  std::vector<float> w(static_cast<size_t>(p.rows * p.cols));
  for (int64_t r = 0; r < p.rows; ++r) {
    for (int64_t c = 0; c < p.cols; ++c) {
      const size_t gi = static_cast<size_t>(r * groups + g_idx[static_cast<size_t>(c)]);
      const size_t i = static_cast<size_t>(r * p.cols + c);
      w[i] = p.scales[gi] * static_cast<float>(static_cast<int>(p.codes[i]) - static_cast<int>(p.zeros[gi]));
    }
  }
  return w;
}

namespace {
constexpr std::array<int, 8> kAwqOrder = {0, 2, 4, 6, 1, 3, 5, 7};

void check_awq_shape(int bits, int64_t n, std::string_view tensor) {
  if (bits != 4) fail(ErrorKind::kInvalidArgument, "tensor '{}': AWQ checkpoints hold 4 bits, not {}", tensor, bits);
  if (n % 8 != 0) {
    fail(ErrorKind::kInvalidArgument, "tensor '{}': AWQ packs 8 outputs per word; {} outputs are not a multiple of 8",
         tensor, n);
  }
}
}  // namespace

AwqTensors awq_pack(const IntTensorParts& p, std::string_view tensor) {
  const int64_t n = p.rows, k = p.cols, groups = p.groups(), words = n / 8;
  check_awq_shape(p.bits, n, tensor);
  AwqTensors t{.groups = groups};
  t.qweight.resize(static_cast<size_t>(k * words));
  for (int64_t c = 0; c < k; ++c) {
    for (int64_t j = 0; j < words; ++j) {
      uint32_t w = 0;
      for (int i = 0; i < 8; ++i) w |= static_cast<uint32_t>(p.codes[static_cast<size_t>((8 * j + kAwqOrder[i]) * k + c)]) << (4 * i);
      t.qweight[static_cast<size_t>(c * words + j)] = static_cast<int32_t>(w);
    }
  }
  t.qzeros.resize(static_cast<size_t>(groups * words));
  t.scales.resize(static_cast<size_t>(groups * n));
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t j = 0; j < words; ++j) {
      uint32_t w = 0;
      for (int i = 0; i < 8; ++i) w |= static_cast<uint32_t>(p.zeros[static_cast<size_t>((8 * j + kAwqOrder[i]) * groups + g)]) << (4 * i);
      t.qzeros[static_cast<size_t>(g * words + j)] = static_cast<int32_t>(w);
    }
    for (int64_t r = 0; r < n; ++r) {
      t.scales[static_cast<size_t>(g * n + r)] = f16_bits(p.scales[static_cast<size_t>(r * groups + g)], tensor);
    }
  }
  return t;
}

IntTensorParts awq_unpack(int64_t n, int64_t k, int64_t group, std::span<const std::byte> qweight,
                          std::span<const std::byte> qzeros, std::span<const float> scales, std::string_view tensor) {
  check_awq_shape(4, n, tensor);
  if (group == -1) group = k;
  if (group <= 0 || k % group != 0) {
    fail(ErrorKind::kFormat, "tensor '{}': group_size {} does not divide the input size {}", tensor, group, k);
  }
  const int64_t groups = k / group, words = n / 8;
  check_size(qweight, static_cast<size_t>(k * words), 4, tensor, "qweight");
  check_size(qzeros, static_cast<size_t>(groups * words), 4, tensor, "qzeros");
  if (scales.size() != static_cast<size_t>(groups * n)) {
    fail(ErrorKind::kFormat, "tensor '{}': scales hold {} values, the shape implies {}", tensor, scales.size(),
         groups * n);
  }
  IntTensorParts p{.bits = 4, .rows = n, .cols = k, .group = group};
  p.codes.resize(static_cast<size_t>(n * k));
  p.scales.resize(static_cast<size_t>(n * groups));
  p.zeros.resize(p.scales.size());
  for (int64_t c = 0; c < k; ++c) {
    for (int64_t j = 0; j < words; ++j) {
      const auto w = static_cast<uint32_t>(load_i32(qweight, static_cast<size_t>(c * words + j)));
      for (int i = 0; i < 8; ++i) p.codes[static_cast<size_t>((8 * j + kAwqOrder[i]) * k + c)] = (w >> (4 * i)) & 15u;
    }
  }
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t j = 0; j < words; ++j) {
      const auto w = static_cast<uint32_t>(load_i32(qzeros, static_cast<size_t>(g * words + j)));
      for (int i = 0; i < 8; ++i) p.zeros[static_cast<size_t>((8 * j + kAwqOrder[i]) * groups + g)] = (w >> (4 * i)) & 15u;
    }
    for (int64_t r = 0; r < n; ++r) p.scales[static_cast<size_t>(r * groups + g)] = scales[static_cast<size_t>(g * n + r)];
  }
  return p;
}

namespace {
void check_ct_bits(int bits, std::string_view tensor) {
  if (bits != 4 && bits != 8) {
    fail(ErrorKind::kInvalidArgument, "tensor '{}': calq writes and reads pack-quantized 4 and 8 bits (vLLM's), not {}",
         tensor, bits);
  }
}
}  // namespace

CtPackedTensors ct_pack(const IntTensorParts& p, bool symmetric, std::string_view tensor) {
  check_ct_bits(p.bits, tensor);
  const int64_t n = p.rows, k = p.cols, groups = p.groups(), per = 32 / p.bits;
  CtPackedTensors t{.packed_cols = (k + per - 1) / per, .zero_rows = symmetric ? 0 : (n + per - 1) / per, .groups = groups};
  t.weight_packed.assign(static_cast<size_t>(n * t.packed_cols), 0);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < k; ++c) {
      auto& w = t.weight_packed[static_cast<size_t>(r * t.packed_cols + c / per)];
      w = static_cast<int32_t>(static_cast<uint32_t>(w) | static_cast<uint32_t>(p.codes[static_cast<size_t>(r * k + c)])
                                                              << (p.bits * (c % per)));
    }
  }
  t.scales.resize(static_cast<size_t>(n * groups));
  const uint8_t half = static_cast<uint8_t>(1 << (p.bits - 1));
  for (size_t i = 0; i < t.scales.size(); ++i) {
    t.scales[i] = f16_bits(p.scales[i], tensor);
    if (symmetric && p.zeros[i] != half) {
      fail(ErrorKind::kInvalidArgument, "tensor '{}': a symmetric scheme needs every zero point at {}, group {} has {}",
           tensor, half, i, p.zeros[i]);
    }
  }
  if (!symmetric) {
    t.zero_point.assign(static_cast<size_t>(t.zero_rows * groups), 0);
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t g = 0; g < groups; ++g) {
        auto& w = t.zero_point[static_cast<size_t>((r / per) * groups + g)];
        w = static_cast<int32_t>(static_cast<uint32_t>(w) |
                                 static_cast<uint32_t>(p.zeros[static_cast<size_t>(r * groups + g)]) << (p.bits * (r % per)));
      }
    }
  }
  return t;
}

IntTensorParts ct_unpack(int bits, int64_t n, int64_t k, int64_t group, std::span<const std::byte> weight_packed,
                         std::span<const float> scales, std::span<const std::byte> zero_point, std::string_view tensor) {
  check_ct_bits(bits, tensor);
  if (group <= 0 || k % group != 0) {
    fail(ErrorKind::kFormat, "tensor '{}': group size {} does not divide the input size {}", tensor, group, k);
  }
  const int64_t per = 32 / bits, packed_cols = (k + per - 1) / per, groups = k / group;
  const uint32_t mask = (1u << bits) - 1;
  check_size(weight_packed, static_cast<size_t>(n * packed_cols), 4, tensor, "weight_packed");
  if (scales.size() != static_cast<size_t>(n * groups)) {
    fail(ErrorKind::kFormat, "tensor '{}': weight_scale holds {} values, the shape implies {}", tensor, scales.size(),
         n * groups);
  }
  IntTensorParts p{.bits = bits, .rows = n, .cols = k, .group = group};
  p.codes.resize(static_cast<size_t>(n * k));
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < k; ++c) {
      const auto w = static_cast<uint32_t>(load_i32(weight_packed, static_cast<size_t>(r * packed_cols + c / per)));
      p.codes[static_cast<size_t>(r * k + c)] = static_cast<uint8_t>((w >> (bits * (c % per))) & mask);
    }
  }
  p.scales.assign(scales.begin(), scales.end());
  p.zeros.assign(p.scales.size(), static_cast<uint8_t>(1 << (bits - 1)));
  if (!zero_point.empty()) {
    check_size(zero_point, static_cast<size_t>((n + per - 1) / per * groups), 4, tensor, "weight_zero_point");
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t g = 0; g < groups; ++g) {
        const auto w = static_cast<uint32_t>(load_i32(zero_point, static_cast<size_t>((r / per) * groups + g)));
        p.zeros[static_cast<size_t>(r * groups + g)] = static_cast<uint8_t>((w >> (bits * (r % per))) & mask);
      }
    }
  }
  return p;
}

}  // namespace calq::io
