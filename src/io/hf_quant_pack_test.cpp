// GPTQ / AWQ / compressed-tensors packing: hand-worked words from the published layouts, pack then
// unpack as the identity for every bit width, and the int formats' parts round trip.
#include "io/hf_quant_pack.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>

#include "core/dtype.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "formats/format.h"
#include "support/error_of.h"
#include "support/random_data.h"

namespace calq::io {
namespace {

IntTensorParts random_parts(int bits, int64_t n, int64_t k, int64_t group, uint32_t seed, bool symmetric = false) {
  std::mt19937 rng(seed);
  IntTensorParts p{.bits = bits, .rows = n, .cols = k, .group = group};
  p.codes.resize(static_cast<size_t>(n * k));
  for (auto& c : p.codes) c = static_cast<uint8_t>(rng() % (1u << bits));
  p.scales.resize(static_cast<size_t>(n * (k / group)));
  p.zeros.resize(p.scales.size());
  for (size_t i = 0; i < p.scales.size(); ++i) {
    p.scales[i] = f16_to_f32(f32_to_f16(0.001f + static_cast<float>(rng() % 1000) * 1e-4f));
    p.zeros[i] = symmetric ? static_cast<uint8_t>(1 << (bits - 1)) : static_cast<uint8_t>(1 + rng() % ((1u << bits) - 1));
  }
  return p;
}

std::span<const std::byte> bytes_of(const std::vector<int32_t>& v) { return std::as_bytes(std::span(v)); }
std::vector<float> floats_of(const std::vector<uint16_t>& h) {
  std::vector<float> f(h.size());
  for (size_t i = 0; i < h.size(); ++i) f[i] = f16_to_f32(h[i]);
  return f;
}

// fn throws a calq::Error whose message holds every one of `parts`.
void expect_error_has(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  const std::string message = testing::error_of(fn);
  ASSERT_FALSE(message.empty()) << "no calq::Error thrown";
  for (const auto& part : parts) EXPECT_NE(message.find(part), std::string::npos) << message << "\n  lacks: " << part;
}

void expect_same(const IntTensorParts& a, const IntTensorParts& b) {
  EXPECT_EQ(a.bits, b.bits);
  EXPECT_EQ(a.group, b.group);
  EXPECT_EQ(a.codes, b.codes);
  EXPECT_EQ(a.scales, b.scales);
  EXPECT_EQ(a.zeros, b.zeros);
}

TEST(GptqPack, FourBitWordsHoldEightInputsLowNibbleFirst) {
  IntTensorParts p = random_parts(4, 32, 32, 32, 1);
  for (int k = 0; k < 8; ++k) p.codes[static_cast<size_t>(k)] = static_cast<uint8_t>(k + 1);  // output 0, inputs 0..7
  const GptqTensors t = gptq_pack(p, GptqVersion::kV2, "w");
  EXPECT_EQ(t.qweight_rows, 4);  // K·b/32
  EXPECT_EQ(static_cast<uint32_t>(t.qweight[0]), 0x87654321u);  // qweight[0][0]
  // v1 stores zero − 1: a symmetric 4-bit tensor's zeros (8) are the words 0x77777777.
  const GptqTensors v1 = gptq_pack(random_parts(4, 32, 32, 32, 2, /*symmetric=*/true), GptqVersion::kV1, "w");
  for (int32_t w : v1.qzeros) EXPECT_EQ(static_cast<uint32_t>(w), 0x77777777u);
  for (int32_t g : t.g_idx) EXPECT_EQ(g, 0);
}

TEST(GptqPack, ThreeBitValuesStraddleWords) {
  IntTensorParts p = random_parts(3, 32, 32, 32, 3);
  std::fill(p.codes.begin(), p.codes.end(), 0);
  p.codes[10] = 7;  // output 0, input 10: bits 30..32 of the stream
  const GptqTensors t = gptq_pack(p, GptqVersion::kV2, "w");
  ASSERT_EQ(t.qweight_rows, 3);
  EXPECT_EQ(static_cast<uint32_t>(t.qweight[0 * 32]), 0xC0000000u);  // word 0 of output 0: bits 30, 31
  EXPECT_EQ(static_cast<uint32_t>(t.qweight[1 * 32]), 0x1u);         // word 1: bit 0
  EXPECT_EQ(static_cast<uint32_t>(t.qweight[2 * 32]), 0u);
}

TEST(GptqPack, PackThenUnpackIsTheIdentityForEveryWidthAndVersion) {
  for (int bits : {2, 3, 4, 8}) {
    for (GptqVersion v : {GptqVersion::kV1, GptqVersion::kV2}) {
      const IntTensorParts p = random_parts(bits, 64, 128, 32, 10 + static_cast<uint32_t>(bits));
      const GptqTensors t = gptq_pack(p, v, "w");
      std::vector<int32_t> g_idx;
      const IntTensorParts q = gptq_unpack(bits, 64, 128, 32, v, bytes_of(t.qweight), bytes_of(t.qzeros),
                                           floats_of(t.scales), bytes_of(t.g_idx), g_idx, "w");
      SCOPED_TRACE(bits);
      expect_same(p, q);
      EXPECT_TRUE(gidx_is_sequential(g_idx, 32));
    }
  }
}

TEST(GptqPack, VersionOneRefusesZeroPointZeroAndReadsItsWrapAsAnError) {
  IntTensorParts p = random_parts(4, 32, 64, 32, 4);
  for (auto& z : p.zeros) z = std::min<uint8_t>(z, 14);  // none that v1 would read as 16
  p.zeros[5] = 0;
  expect_error_has(([&] { gptq_pack(p, GptqVersion::kV1, "model.layers.0.mlp.up_proj"); }),
              std::vector<std::string>{"model.layers.0.mlp.up_proj", "zero point 0", "v2"});
  const GptqTensors t = gptq_pack(p, GptqVersion::kV2, "w");  // v2 stores it
  std::vector<int32_t> g_idx;
  // The same words read as v1: the stored 0 means zero 1 (no error), so the values differ...
  const IntTensorParts v1 = gptq_unpack(4, 32, 64, 32, GptqVersion::kV1, bytes_of(t.qweight), bytes_of(t.qzeros),
                                        floats_of(t.scales), bytes_of(t.g_idx), g_idx, "w");
  EXPECT_EQ(v1.zeros[5], 1);
  // ...and a stored 15 under v1 would be zero 16: an error naming the tensor.
  p.zeros[5] = 15;
  const GptqTensors t15 = gptq_pack(p, GptqVersion::kV2, "w");
  expect_error_has(([&] {
                gptq_unpack(4, 32, 64, 32, GptqVersion::kV1, bytes_of(t15.qweight), bytes_of(t15.qzeros),
                            floats_of(t15.scales), bytes_of(t15.g_idx), g_idx, "blk");
              }),
              std::vector<std::string>{"blk", "zero 16"});
}

TEST(GptqPack, ActOrderGroupIndexDequantizesByItsGroups) {
  IntTensorParts p = random_parts(4, 32, 64, 32, 5);
  std::vector<int32_t> g_idx(64);
  for (int k = 0; k < 64; ++k) g_idx[static_cast<size_t>(k)] = k % 2;  // interleaved groups
  EXPECT_FALSE(gidx_is_sequential(g_idx, 32));
  const std::vector<float> w = dequantize_with_gidx(p, g_idx);
  // Output 3, input 7: group 1.
  const size_t i = 3 * 64 + 7, g = 3 * 2 + 1;
  EXPECT_EQ(w[i], p.scales[g] * static_cast<float>(p.codes[i] - p.zeros[g]));
}

TEST(AwqPack, NibblesFollowTheInterleavedOrder) {
  IntTensorParts p = random_parts(4, 8, 32, 32, 6);
  for (int n = 0; n < 8; ++n) p.codes[static_cast<size_t>(n * 32)] = static_cast<uint8_t>(n);  // input 0, outputs 0..7
  const AwqTensors t = awq_pack(p, "w");
  // Nibble i holds output order[i] = 0, 2, 4, 6, 1, 3, 5, 7.
  EXPECT_EQ(static_cast<uint32_t>(t.qweight[0]), 0x75316420u);
  const IntTensorParts q = awq_unpack(8, 32, 32, bytes_of(t.qweight), bytes_of(t.qzeros), floats_of(t.scales), "w");
  expect_same(p, q);
  expect_error_has(([&] { awq_pack(random_parts(3, 8, 32, 32, 7), "w"); }), std::vector<std::string>{"AWQ", "4 bits"});
}

TEST(CtPack, WordsRunAlongInputsAndZeroPointsAlongOutputs) {
  IntTensorParts p = random_parts(4, 16, 32, 32, 8);
  for (int k = 0; k < 8; ++k) p.codes[static_cast<size_t>(k)] = static_cast<uint8_t>(k + 1);
  for (int n = 0; n < 8; ++n) p.zeros[static_cast<size_t>(n)] = static_cast<uint8_t>(n + 1);  // one group per row
  const CtPackedTensors t = ct_pack(p, /*symmetric=*/false, "w");
  EXPECT_EQ(t.packed_cols, 4);
  EXPECT_EQ(t.zero_rows, 2);
  EXPECT_EQ(static_cast<uint32_t>(t.weight_packed[0]), 0x87654321u);
  EXPECT_EQ(static_cast<uint32_t>(t.zero_point[0]), 0x87654321u);
  for (int bits : {4, 8}) {
    for (bool sym : {true, false}) {
      const IntTensorParts a = random_parts(bits, 24, 64, 32, 9, sym);
      const CtPackedTensors c = ct_pack(a, sym, "w");
      EXPECT_EQ(c.zero_point.empty(), sym);
      expect_same(a, ct_unpack(bits, 24, 64, 32, bytes_of(c.weight_packed), floats_of(c.scales),
                               bytes_of(c.zero_point), "w"));
    }
  }
}

TEST(HfQuantPack, ShortTensorsAreFormatErrorsNamingTheTensor) {
  const IntTensorParts p = random_parts(4, 32, 64, 32, 11);
  const GptqTensors t = gptq_pack(p, GptqVersion::kV2, "w");
  std::vector<int32_t> g_idx;
  const auto qweight = bytes_of(t.qweight).first(t.qweight.size() * 4 - 4);
  expect_error_has(([&] {
                gptq_unpack(4, 32, 64, 32, GptqVersion::kV2, qweight, bytes_of(t.qzeros), floats_of(t.scales),
                            bytes_of(t.g_idx), g_idx, "model.layers.1.self_attn.q_proj");
              }),
              std::vector<std::string>{"model.layers.1.self_attn.q_proj", "qweight"});
  std::vector<int32_t> bad_gidx = t.g_idx;
  bad_gidx[3] = 7;
  expect_error_has(([&] {
                gptq_unpack(4, 32, 64, 32, GptqVersion::kV2, bytes_of(t.qweight), bytes_of(t.qzeros),
                            floats_of(t.scales), bytes_of(bad_gidx), g_idx, "q");
              }),
              std::vector<std::string>{"g_idx[3] = 7"});
  IntTensorParts f32 = p;
  f32.scales[0] = 0.1f;  // not an fp16 value
  expect_error_has(([&] { gptq_pack(f32, GptqVersion::kV2, "q"); }), std::vector<std::string>{"'q'", "not an fp16 value"});
}

TEST(IntLayout, PartsOfEveryGroupedIntFormatRoundTripAndDequantizeTheSame) {
  ThreadPool pool(1);
  const std::vector<float> x = testing::gaussian(16 * 256, 12);
  for (const char* name : {"int4-g128-sym", "int4-g64-asym", "int3-g32-asym", "int8-pc-sym", "int2-pt-asym"}) {
    SCOPED_TRACE(name);
    const Format& f = format_by_name(name);
    std::vector<std::byte> bytes(f.tensor_bytes(16, 256));
    f.quantize(pool, x.data(), 16, 256, bytes);
    const IntTensorParts p = int_tensor_parts(f, bytes, 16, 256);
    EXPECT_EQ(int_tensor_bytes(f, p, "w"), bytes);
    std::vector<float> w(16 * 256);
    f.dequantize(pool, bytes.data(), 16, 256, w.data());
    for (int64_t r = 0; r < 16; ++r) {
      for (int64_t c = 0; c < 256; ++c) {
        const size_t i = static_cast<size_t>(r * 256 + c), g = static_cast<size_t>(r * p.groups() + c / p.group);
        ASSERT_EQ(w[i], p.scales[g] * static_cast<float>(static_cast<int>(p.codes[i]) - p.zeros[g]));
      }
    }
  }
  // A zero the symmetric format cannot hold is an error naming the tensor and the group.
  const Format& sym = format_by_name("int4-g128-sym");
  std::vector<std::byte> bytes(sym.tensor_bytes(16, 256));
  sym.quantize(pool, x.data(), 16, 256, bytes);
  IntTensorParts p = int_tensor_parts(sym, bytes, 16, 256);
  p.zeros[3] = 5;
  expect_error_has(([&] { int_tensor_bytes(sym, p, "wq"); }), std::vector<std::string>{"'wq'", "row 1 group 1", "zero point"});
}

}  // namespace
}  // namespace calq::io
