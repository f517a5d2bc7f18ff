#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include "calib/collectors.h"
#include "core/error.h"
#include "io/gguf.h"
#include "support/random_data.h"
#include "support/error_of.h"

namespace calq::calib {
namespace {

namespace fs = std::filesystem;

class StatsFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("calq_stats_file_test_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path path(const std::string& name) const { return dir_ / name; }

  fs::path dir_;
};

// Two decoder layers and the head, every site observed `samples` times with seq rows.
CalibrationStats make_stats(StatSet kinds, uint32_t seed, int64_t samples = 3, int64_t seq = 5) {
  CalibrationStats s(kinds);
  const int64_t hidden = 8, ffn = 12;
  for (int64_t k = 0; k < samples; ++k) {
    const auto xh = testing::gaussian(static_cast<size_t>(seq * hidden), seed + static_cast<uint32_t>(k));
    const auto xf = testing::gaussian(static_cast<size_t>(seq * ffn), seed + 100 + static_cast<uint32_t>(k), 5.0f);
    for (int64_t layer = 0; layer < 2; ++layer) {
      s.observe(layer, InputSite::kAttnIn, xh.data(), seq, hidden);
      s.observe(layer, InputSite::kAttnOut, xh.data(), seq, hidden);
      s.observe(layer, InputSite::kMlpIn, xh.data(), seq, hidden);
      s.observe(layer, InputSite::kMlpDown, xf.data(), seq, ffn);
    }
    s.observe(-1, InputSite::kHeadIn, xh.data(), seq, hidden);
  }
  s.samples = samples;
  s.seq_len = seq;
  s.seed = static_cast<int64_t>(seed) - 42;
  s.model_name = "calq-ref-llama";
  s.calib_sha256 = {"0123abcd", "feedbeef"};
  return s;
}

std::vector<char> file_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

void write_bytes(const fs::path& p, const std::vector<char>& bytes) {
  std::ofstream f(p, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// The message of the calq::Error `fn` throws ("" and a test failure if none).
using calq::testing::error_of;

TEST_F(StatsFileTest, WriteReadRoundTripIsExact) {
  for (const StatSet kinds : {StatSet::all(), StatSet::defaults(), StatSet::parse("mean_sq"), StatSet{}}) {
    const CalibrationStats s = make_stats(kinds, 1);
    const fs::path p = path("a.gguf");
    write_stats_file(s, p);
    const CalibrationStats r = read_stats_file(p);
    EXPECT_TRUE(r == s) << kinds.to_string();
    EXPECT_EQ(r.sites(), s.sites());
    // Writing what was read gives the same bytes.
    write_stats_file(r, path("b.gguf"));
    EXPECT_EQ(file_bytes(p), file_bytes(path("b.gguf"))) << kinds.to_string();
  }
}

TEST_F(StatsFileTest, DocumentedKeysAndTensors) {
  write_stats_file(make_stats(StatSet::all(), 1), path("a.gguf"));
  const io::GgufFile f = io::GgufFile::open(path("a.gguf"));
  EXPECT_EQ(f.get("general.type").as_string("t"), "calq-stats");
  EXPECT_EQ(f.get("calq.stats.version").as_int("t"), 1);
  EXPECT_EQ(f.get("calq.stats.samples").as_int("t"), 3);
  EXPECT_EQ(f.get("calq.stats.seq_len").as_int("t"), 5);
  EXPECT_EQ(f.get("calq.stats.seed").as_int("t"), -41);
  EXPECT_EQ(f.get("calq.stats.model").as_string("t"), "calq-ref-llama");
  EXPECT_EQ(f.get("calq.stats.calib_sha256").strings, (std::vector<std::string>{"0123abcd", "feedbeef"}));
  EXPECT_EQ(f.get("calq.stats.kinds").strings,
            (std::vector<std::string>{"absmax", "mean_abs", "mean_sq", "histogram", "hessian"}));
  EXPECT_EQ(f.get("calq.stats.sites").strings.front(), "blk.0.attn_in");
  EXPECT_EQ(f.get("calq.stats.sites").strings.back(), "head_in");
  const auto* h = f.find_tensor("blk.1.mlp_down.hessian");
  ASSERT_NE(h, nullptr);
  EXPECT_EQ(h->type, 28u);  // F64
  EXPECT_EQ(h->ne, (std::vector<int64_t>{12, 12}));
  ASSERT_NE(f.find_tensor("head_in.absmax"), nullptr);
  EXPECT_EQ(f.find_tensor("head_in.absmax")->type, 0u);
  EXPECT_EQ(f.find_tensor("blk.0.attn_out.histogram")->type, 27u);  // I64
  EXPECT_EQ(f.find_tensor("blk.0.attn_out.sum_sq")->type, 28u);
  EXPECT_EQ(f.tensors().size(), 9u * 5u);
}

TEST_F(StatsFileTest, MergeFilesEqualsMergeInMemory) {
  const CalibrationStats a = make_stats(StatSet::all(), 1);
  CalibrationStats b = make_stats(StatSet::all(), 50, 2);
  b.seed = 99;
  b.calib_sha256 = {"feedbeef", "77"};
  write_stats_file(a, path("a.gguf"));
  write_stats_file(b, path("b.gguf"));
  CalibrationStats in_memory = a;
  in_memory.merge(b);
  const std::vector<fs::path> paths = {path("a.gguf"), path("b.gguf")};
  const CalibrationStats merged = merge_stats_files(paths);
  EXPECT_TRUE(merged == in_memory);
  EXPECT_EQ(merged.samples, 5);
  EXPECT_EQ(merged.seed, a.seed);
  EXPECT_EQ(merged.calib_sha256, (std::vector<std::string>{"0123abcd", "feedbeef", "77"}));
  EXPECT_EQ(merged.find(0, InputSite::kAttnIn)->rows(), 25);
  EXPECT_THROW(merge_stats_files({}), Error);
}

TEST_F(StatsFileTest, IncompatibleFilesNameBoth) {
  write_stats_file(make_stats(StatSet::all(), 1), path("a.gguf"));
  write_stats_file(make_stats(StatSet::defaults(), 1), path("kinds.gguf"));
  CalibrationStats missing = make_stats(StatSet::all(), 1);
  CalibrationStats extra = missing;
  const std::vector<float> x(8, 1.0f);
  extra.observe(5, InputSite::kAttnIn, x.data(), 1, 8);
  write_stats_file(extra, path("extra.gguf"));
  CalibrationStats wide(StatSet::all());
  for (int64_t layer = 0; layer < 2; ++layer) {
    for (const auto site : {InputSite::kAttnIn, InputSite::kAttnOut, InputSite::kMlpIn}) {
      wide.observe(layer, site, x.data(), 1, 8);
    }
    const std::vector<float> w(16, 1.0f);
    wide.observe(layer, InputSite::kMlpDown, w.data(), 1, 16);
  }
  wide.observe(-1, InputSite::kHeadIn, x.data(), 1, 8);
  wide.model_name = "calq-ref-llama";
  wide.seq_len = 5;
  write_stats_file(wide, path("wide.gguf"));
  CalibrationStats other_model = make_stats(StatSet::all(), 1);
  other_model.model_name = "other";
  write_stats_file(other_model, path("model.gguf"));

  for (const auto& [name, reason] : std::vector<std::pair<std::string, std::string>>{
           {"kinds.gguf", "statistics"}, {"extra.gguf", "blk.5.attn_in"}, {"wide.gguf", "blk.0.mlp_down"},
           {"model.gguf", "model"}}) {
    const std::vector<fs::path> paths = {path("a.gguf"), path(name)};
    const std::string m = error_of([&] { merge_stats_files(paths); });
    EXPECT_NE(m.find(path("a.gguf").string()), std::string::npos) << m;
    EXPECT_NE(m.find(path(name).string()), std::string::npos) << m;
    EXPECT_NE(m.find(reason), std::string::npos) << m;
  }
}

TEST_F(StatsFileTest, TruncatedAndGarbageFilesAreErrors) {
  write_stats_file(make_stats(StatSet::all(), 1), path("a.gguf"));
  const auto bytes = file_bytes(path("a.gguf"));
  for (const size_t keep : {size_t{0}, size_t{3}, size_t{40}, bytes.size() / 3, bytes.size() - 1}) {
    write_bytes(path("t.gguf"), std::vector<char>(bytes.begin(), bytes.begin() + static_cast<ptrdiff_t>(keep)));
    const std::string m = error_of([&] { read_stats_file(path("t.gguf")); });
    EXPECT_NE(m.find("t.gguf"), std::string::npos) << keep << ": " << m;
  }
  write_bytes(path("g.gguf"), std::vector<char>(1000, 'x'));
  EXPECT_NE(error_of([&] { read_stats_file(path("g.gguf")); }).find("g.gguf"), std::string::npos);
  EXPECT_NE(error_of([&] { read_stats_file(path("absent.gguf")); }).find("absent.gguf"), std::string::npos);
}

// Rewrites a valid stats file with `edit` applied to its metadata and tensors, then expects
// reading it to fail with a message naming the file and containing `needle`.
struct Tampered {
  io::GgufMetadata meta;
  std::vector<io::GgufWriteTensor> tensors;
  std::vector<std::vector<std::byte>> owned;  // replacement data

  io::GgufValue& key(const std::string& k) {
    for (auto& [name, v] : meta) {
      if (name == k) return v;
    }
    ADD_FAILURE() << "no key " << k;
    return meta.front().second;
  }
  io::GgufWriteTensor& tensor(const std::string& n) {
    for (auto& t : tensors) {
      if (t.name == n) return t;
    }
    ADD_FAILURE() << "no tensor " << n;
    return tensors.front();
  }
  // A writable copy of tensor n's data, viewed as T.
  template <typename T>
  std::span<T> data(const std::string& n) {
    auto& t = tensor(n);
    owned.emplace_back(t.data.begin(), t.data.end());
    t.data = owned.back();
    return {reinterpret_cast<T*>(owned.back().data()), owned.back().size() / sizeof(T)};
  }
};

TEST_F(StatsFileTest, HostileContentsNameFileAndTensor) {
  write_stats_file(make_stats(StatSet::all(), 1), path("a.gguf"));
  const io::GgufFile good = io::GgufFile::open(path("a.gguf"));
  const std::vector<std::pair<std::string, std::function<void(Tampered&)>>> cases = {
      {"general.type", [](Tampered& t) { t.key("general.type") = io::GgufValue::of_string("model"); }},
      {"version 7", [](Tampered& t) { t.key("calq.stats.version") = io::GgufValue::of_uint32(7); }},
      {"'bogus'", [](Tampered& t) { t.key("calq.stats.kinds").strings.push_back("bogus"); }},
      {"listed twice", [](Tampered& t) { t.key("calq.stats.kinds").strings.push_back("absmax"); }},
      {"calq.stats.samples", [](Tampered& t) { t.key("calq.stats.samples").i = -1; }},
      {"blk.x.attn_in", [](Tampered& t) { t.key("calq.stats.sites").strings[0] = "blk.x.attn_in"; }},
      {"calq.stats.site_cols", [](Tampered& t) { t.key("calq.stats.site_cols").ints.pop_back(); }},
      {"calq.stats.site_rows", [](Tampered& t) { t.key("calq.stats.site_rows").ints[1] = -3; }},
      {"calq.stats.histogram_exp", [](Tampered& t) { t.key("calq.stats.histogram_exp").ints[0] = 500; }},
      {"blk.0.attn_in.absmax", [](Tampered& t) { t.data<float>("blk.0.attn_in.absmax")[2] = NAN; }},
      {"blk.0.mlp_in.absmax", [](Tampered& t) { t.data<float>("blk.0.mlp_in.absmax")[0] = -1.0f; }},
      {"blk.1.attn_out.sum_abs", [](Tampered& t) { t.data<double>("blk.1.attn_out.sum_abs")[3] = INFINITY; }},
      {"head_in.histogram", [](Tampered& t) { t.data<int64_t>("head_in.histogram")[7] = -1; }},
      {"blk.0.attn_in.histogram", [](Tampered& t) { t.data<int64_t>("blk.0.attn_in.histogram")[0] += 1; }},
      {"blk.1.mlp_down.hessian", [](Tampered& t) { t.data<double>("blk.1.mlp_down.hessian")[1] += 1.0; }},
      {"blk.0.mlp_down.sum_sq", [](Tampered& t) { t.tensor("blk.0.mlp_down.sum_sq").type = io::kGgmlF32;
                                                   t.tensor("blk.0.mlp_down.sum_sq").data =
                                                       t.tensor("blk.0.mlp_down.sum_sq").data.first(12 * 4); }},
      {"blk.0.mlp_down.absmax", [](Tampered& t) { t.tensor("blk.0.mlp_down.absmax").ne = {6, 2}; }},
      {"head_in.hessian", [](Tampered& t) { std::erase_if(t.tensors, [](auto& x) { return x.name == "head_in.hessian"; }); }},
      {"head_in.extra", [](Tampered& t) {
         auto copy = t.tensor("head_in.absmax");
         copy.name = "head_in.extra";
         t.tensors.push_back(copy);
       }},
  };
  for (const auto& [needle, edit] : cases) {
    Tampered t{good.metadata(), io::gguf_write_tensors(good), {}};
    t.owned.reserve(4);
    edit(t);
    const fs::path p = path("bad.gguf");
    io::write_gguf(p, t.meta, t.tensors);
    const std::string m = error_of([&] { read_stats_file(p); });
    EXPECT_NE(m.find("bad.gguf"), std::string::npos) << needle << ": " << m;
    EXPECT_NE(m.find(needle), std::string::npos) << needle << ": " << m;
  }
}

}  // namespace
}  // namespace calq::calib
