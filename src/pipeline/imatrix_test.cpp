// Importance matrices: llama.cpp's legacy file of the reference model parses (names, counts,
// values divided by ncall), truncated or hostile files give kFormat errors naming the file, and
// the GGUF imatrix format reads in_sum2 / counts.
#include "pipeline/imatrix.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <limits>

#include "core/error.h"
#include "core/mapped_file.h"
#include "io/gguf.h"
#include "support/shared_dir.h"

namespace calq::pipeline {
namespace {

const char* kLegacy = "peer-tests/llama.cpp-quants/imatrix-calib.dat";

std::vector<std::byte> file_bytes(const std::filesystem::path& p) {
  const auto f = MappedFile::open(p);
  return {f->bytes().begin(), f->bytes().end()};
}

// Independent little reader for the first entry: (name, ncall, first raw value).
struct RawFirst {
  std::string name;
  int32_t ncall = 0;
  float v0 = 0;
};
RawFirst raw_first(const std::vector<std::byte>& b) {
  RawFirst r;
  int32_t len = 0;
  std::memcpy(&len, b.data() + 4, 4);
  r.name.assign(reinterpret_cast<const char*>(b.data() + 8), static_cast<size_t>(len));
  std::memcpy(&r.ncall, b.data() + 8 + len, 4);
  std::memcpy(&r.v0, b.data() + 8 + len + 8, 4);
  return r;
}

TEST(Imatrix, ReadsLlamaCppsLegacyFileOfTheReferenceModel) {
  CALQ_REQUIRE_SHARED(kLegacy);
  const auto path = calq::testing::shared_dir() / kLegacy;
  const Imatrix im = read_imatrix(path);
  // Every linear layer of the 6 blocks; no token_embd/output (tied embeddings see no activations).
  ASSERT_EQ(im.entries.size(), 42u);
  for (int b = 0; b < 6; ++b) {
    for (const char* t : {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"}) {
      const std::string name = "blk." + std::to_string(b) + "." + t + ".weight";
      const ImatrixEntry* e = im.find(name);
      ASSERT_NE(e, nullptr) << name;
      // Input widths of the reference model: hidden 512, intermediate 1536 (ffn_down's input).
      EXPECT_EQ(e->values.size(), std::string(t) == "ffn_down" ? 1536u : 512u) << name;
      EXPECT_EQ(e->ncall, 100) << name;  // 100 chunks of 512 tokens
      for (float v : e->values) ASSERT_GE(v, 0.0f) << name;
    }
  }
  EXPECT_EQ(im.chunks, 100);
  EXPECT_NE(im.dataset.find("calib.txt"), std::string::npos) << im.dataset;
  // Values are the file's sums divided by ncall.
  const RawFirst raw = raw_first(file_bytes(path));
  const ImatrixEntry* e = im.find(raw.name);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->values[0], raw.v0 / static_cast<float>(raw.ncall));
}

void expect_format_error(std::span<const std::byte> bytes, const std::string& needle) {
  try {
    parse_legacy_imatrix(bytes, "bad.dat");
    FAIL() << "no error for " << bytes.size() << " bytes";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kFormat) << e.what();
    EXPECT_NE(std::string(e.what()).find("bad.dat"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Imatrix, TruncatedFilesAreClearErrors) {
  CALQ_REQUIRE_SHARED(kLegacy);
  const std::vector<std::byte> b = file_bytes(calq::testing::shared_dir() / kLegacy);
  const RawFirst raw = raw_first(b);
  const size_t first_values = 8 + raw.name.size() + 8;
  for (const size_t n : {size_t{0}, size_t{3}, size_t{6}, size_t{10}, first_values - 1, first_values + 5,
                         b.size() / 2, b.size() - 1}) {
    SCOPED_TRACE(n);
    expect_format_error(std::span(b).first(n), "truncated");
  }
  // The whole file parses; so does the file without its optional trailer (dataset name).
  const Imatrix whole = parse_legacy_imatrix(b, "ok.dat");
  EXPECT_EQ(whole.entries.size(), 42u);
  const Imatrix bare = parse_legacy_imatrix(std::span(b).first(b.size() - 8 - whole.dataset.size()), "ok.dat");
  EXPECT_EQ(bare.entries.size(), 42u);
  EXPECT_TRUE(bare.dataset.empty());
}

std::vector<std::byte> legacy(int32_t n, const std::string& name, int32_t ncall, int32_t nval,
                              const std::vector<float>& values) {
  std::vector<std::byte> b;
  auto put = [&](const void* p, size_t k) {
    const auto* c = static_cast<const std::byte*>(p);
    b.insert(b.end(), c, c + k);
  };
  const int32_t len = static_cast<int32_t>(name.size());
  put(&n, 4);
  put(&len, 4);
  put(name.data(), name.size());
  put(&ncall, 4);
  put(&nval, 4);
  put(values.data(), values.size() * 4);
  return b;
}

TEST(Imatrix, HostileCountsAndValuesAreRejected) {
  expect_format_error(legacy(0, "a", 1, 1, {1.0f}), "entry count");
  expect_format_error(legacy(1, "a", -1, 1, {1.0f}), "ncall");
  expect_format_error(legacy(1, "a", 1, 0, {}), "value count");
  expect_format_error(legacy(1, "a", 1, 1 << 30, {1.0f}), "truncated");
  expect_format_error(legacy(1, "a", 1, 2, {1.0f, -2.0f}), "finite non-negative");
  expect_format_error(legacy(1, "a", 1, 1, {std::numeric_limits<float>::quiet_NaN()}), "finite non-negative");
  std::vector<std::byte> twice = legacy(2, "a", 1, 1, {1.0f});
  const std::vector<std::byte> again = legacy(2, "a", 1, 1, {2.0f});
  twice.insert(twice.end(), again.begin() + 4, again.end());
  expect_format_error(twice, "twice");
  const Imatrix ok = parse_legacy_imatrix(legacy(1, "w", 4, 2, {2.0f, 8.0f}), "ok.dat");
  EXPECT_EQ(ok.find("w")->values, (std::vector<float>{0.5f, 2.0f}));
  EXPECT_EQ(ok.chunks, 0);
}

TEST(Imatrix, ReadsTheGgufFormat) {
  const auto dir = calq::testing::temp_dir("imatrix_gguf");
  const std::vector<float> sums = {3.0f, 6.0f, 9.0f, 1.0f, 2.0f, 4.0f};  // 3 columns x 2 experts
  const std::vector<float> counts = {3.0f, 2.0f};
  auto span_of = [](const std::vector<float>& v) { return std::as_bytes(std::span(v)); };
  const std::vector<io::GgufWriteTensor> tensors = {
      {.name = "blk.0.ffn_up_exps.weight.in_sum2", .ne = {3, 2}, .type = io::kGgmlF32, .data = span_of(sums)},
      {.name = "blk.0.ffn_up_exps.weight.counts", .ne = {1, 2}, .type = io::kGgmlF32, .data = span_of(counts)},
  };
  const io::GgufMetadata meta = {{"general.type", io::GgufValue::of_string("imatrix")},
                                 {"imatrix.chunk_count", io::GgufValue::of_uint32(7)},
                                 {"imatrix.datasets", io::GgufValue::of_strings({"calib.txt"})}};
  io::write_gguf(dir / "im.gguf", meta, tensors);
  const Imatrix im = read_imatrix(dir / "im.gguf");
  ASSERT_EQ(im.entries.size(), 1u);
  EXPECT_EQ(im.find("blk.0.ffn_up_exps.weight")->values, (std::vector<float>{1.0f, 2.0f, 3.0f, 0.5f, 1.0f, 2.0f}));
  EXPECT_EQ(im.chunks, 7);
  EXPECT_EQ(im.dataset, "calib.txt");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace calq::pipeline
