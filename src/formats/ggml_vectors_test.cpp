// Conformance against llama.cpp's ggml (../shared/peer-tests/ggml-quant-vectors, see its README):
//  * calq dequantizes every block file ggml wrote to exactly ggml's floats (bit for bit);
//  * calq's own encoder reaches an MSE (plain) and importance-weighted MSE (with the imatrix) no
//    worse than ggml's on the same input. The figures are printed as a table for docs/FORMATS.md.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "formats/format.h"
#include "support/shared_dir.h"

namespace calq {
namespace {

const char* const kDir = "peer-tests/ggml-quant-vectors";

template <typename T>
std::vector<T> read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  EXPECT_TRUE(in.good()) << p;
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<T> out(bytes.size() / sizeof(T));
  std::memcpy(out.data(), bytes.data(), out.size() * sizeof(T));
  return out;
}

struct Row {
  std::string type, weights;
  uint32_t ggml_type = 0;
  double mse = 0, iw_mse = 0;
};

std::vector<Row> index_rows() {
  const auto path = testing::shared_dir() / kDir / "index.json";
  std::vector<Row> rows;
  std::ifstream in(path);
  if (!in) return rows;
  const auto j = nlohmann::json::parse(in);
  for (const auto& t : j.at("types")) {
    rows.push_back(Row{.type = t.at("type"), .weights = t.at("weights"), .ggml_type = t.at("ggml_type_id"),
                       .mse = t.at("mse"), .iw_mse = t.at("imatrix_weighted_mse")});
  }
  return rows;
}

struct Errors {
  double mse = 0, iw_mse = 0;
};

Errors errors(const std::vector<float>& x, const std::vector<float>& y, const std::vector<float>& imp, int64_t cols) {
  Errors e;
  for (size_t i = 0; i < x.size(); ++i) {
    const double d = static_cast<double>(x[i]) - y[i];
    e.mse += d * d;
    e.iw_mse += imp[i % static_cast<size_t>(cols)] * d * d;
  }
  e.mse /= static_cast<double>(x.size());
  e.iw_mse /= static_cast<double>(x.size());
  return e;
}

class GgmlVectors : public ::testing::Test {
 protected:
  void SetUp() override {
    CALQ_REQUIRE_SHARED(std::string(kDir) + "/index.json");
    rows_ = index_rows();
    const auto dir = testing::shared_dir() / kDir;
    input_ = read_file<float>(dir / "input_f32.bin");
    imatrix_ = read_file<float>(dir / "imatrix_f32.bin");
    ASSERT_EQ(input_.size(), static_cast<size_t>(kRows * kCols));
    ASSERT_EQ(imatrix_.size(), static_cast<size_t>(kCols));
  }
  static constexpr int64_t kRows = 8, kCols = 4096;
  std::vector<Row> rows_;
  std::vector<float> input_, imatrix_;
};

TEST_F(GgmlVectors, EveryTypeIsRegisteredWithGgmlsLayout) {
  for (const Row& r : rows_) {
    const Format* f = format_by_ggml_type(r.ggml_type);
    ASSERT_NE(f, nullptr) << r.type << " (ggml type " << r.ggml_type << ") is not registered";
    EXPECT_EQ(f->name(), [&] {
      std::string s = r.type;
      for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      return s;
    }());
  }
}

TEST_F(GgmlVectors, DequantizationEqualsGgmlBitForBit) {
  const auto dir = testing::shared_dir() / kDir;
  for (const Row& r : rows_) {
    const Format* f = format_by_ggml_type(r.ggml_type);
    if (f == nullptr) continue;  // reported by EveryTypeIsRegisteredWithGgmlsLayout
    SCOPED_TRACE(r.type + "." + r.weights);
    const auto blocks = read_file<std::byte>(dir / (r.type + "." + r.weights + ".blocks"));
    const auto want = read_file<float>(dir / (r.type + "." + r.weights + ".dequant_f32.bin"));
    ASSERT_EQ(blocks.size(), f->tensor_bytes(kRows, kCols));
    std::vector<float> got(want.size()), ref(want.size());
    f->dequantize_rows(blocks.data(), kRows, kCols, 0, kRows, got.data());
    f->dequantize_rows_reference(blocks.data(), kRows, kCols, 0, kRows, ref.data());
    size_t mismatches = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      if (std::memcmp(&got[i], &want[i], 4) != 0 || std::memcmp(&ref[i], &want[i], 4) != 0) {
        if (++mismatches <= 3) ADD_FAILURE() << "element " << i << ": calq " << got[i] << ", ggml " << want[i];
      }
    }
    EXPECT_EQ(mismatches, 0u);
  }
}

TEST_F(GgmlVectors, EncoderIsAtLeastAsGoodAsGgml) {
  ThreadPool pool(2);
  std::printf("| type | weights | ggml MSE | calq MSE | calq/ggml | ggml imatrix-wMSE | calq imatrix-wMSE | calq/ggml |\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  for (const Row& r : rows_) {
    const Format* f = format_by_ggml_type(r.ggml_type);
    if (f == nullptr) continue;
    SCOPED_TRACE(r.type + "." + r.weights);
    const bool weighted = r.weights == "imatrix";
    std::vector<std::byte> q(f->tensor_bytes(kRows, kCols));
    f->quantize(pool, input_.data(), kRows, kCols, q,
                QuantizeOptions{.tensor_name = r.type, .importance = weighted ? imatrix_.data() : nullptr});
    std::vector<float> y(input_.size());
    f->dequantize(pool, q.data(), kRows, kCols, y.data());
    const Errors e = errors(input_, y, imatrix_, kCols);
    std::printf("| %s | %s | %.9g | %.9g | %.4f | %.9g | %.9g | %.4f |\n", r.type.c_str(), r.weights.c_str(), r.mse,
                e.mse, e.mse / r.mse, r.iw_mse, e.iw_mse, e.iw_mse / r.iw_mse);
    // The objective of each mode: plain minimises MSE, imatrix the importance-weighted MSE.
    // index.json prints 9 significant digits, so an exact tie (f16, bf16) may sit 5e-9 above it.
    constexpr double kPrintedDigits = 1.0 + 5e-9;
    if (weighted) {
      EXPECT_LE(e.iw_mse, r.iw_mse * kPrintedDigits);
    } else {
      EXPECT_LE(e.mse, r.mse * kPrintedDigits);
    }
  }
}

}  // namespace
}  // namespace calq
