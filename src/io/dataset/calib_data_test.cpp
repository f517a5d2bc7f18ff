#include "io/dataset/calib_data.h"

#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include "core/error.h"
#include "support/shared_dir.h"
#include "support/error_of.h"

namespace calq::io {
namespace {

std::filesystem::path write_file(const std::string& tag, const std::string& text) {
  const auto dir = testing::temp_dir(tag);
  const auto path = dir / "calib.txt";
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

const Tokenizer& ref_tokenizer() {
  static const Tokenizer t = Tokenizer::from_file(testing::shared_dir() / "models/calq-ref-llama/tokenizer.json");
  return t;
}

using calq::testing::error_of;

TEST(CalibDocuments, PlainTextSplitsOnBlankLines) {
  const auto p = write_file("calib_plain", "first doc\nline two\n\n  \t\n\nsecond\r\n\nthird\n");
  const auto docs = read_calibration_documents(p);
  ASSERT_EQ(docs.size(), 3u);
  EXPECT_EQ(docs[0], "first doc\nline two");
  EXPECT_EQ(docs[1], "second\r");
  EXPECT_EQ(docs[2], "third");
}

TEST(CalibDocuments, JsonlReadsTextFields) {
  const auto p = write_file("calib_jsonl", "{\"text\": \"a b\", \"id\": 1}\n\n{\"text\": \"c\\nd\"}\n");
  const auto docs = read_calibration_documents(p);
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[0], "a b");
  EXPECT_EQ(docs[1], "c\nd");
}

TEST(CalibDocuments, BadJsonlNamesTheLine) {
  const auto p = write_file("calib_badjsonl", "{\"text\": \"a\"}\n{\"body\": \"b\"}\n");
  const std::string msg = error_of([&] { read_calibration_documents(p); });
  EXPECT_NE(msg.find("line 2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("\"text\""), std::string::npos) << msg;
}

TEST(CalibDocuments, EmptyFileIsAnError) {
  const auto p = write_file("calib_empty", " \n\n\t\n");
  const std::string msg = error_of([&] { read_calibration_documents(p); });
  EXPECT_NE(msg.find("empty"), std::string::npos) << msg;
  EXPECT_NE(msg.find(p.string()), std::string::npos) << msg;
}

TEST(CalibSampling, DistinctAscendingAndSeeded) {
  const auto a = sample_without_replacement(1000, 128, 7);
  ASSERT_EQ(a.size(), 128u);
  EXPECT_TRUE(std::is_sorted(a.begin(), a.end()));
  EXPECT_EQ(std::set<int64_t>(a.begin(), a.end()).size(), 128u);
  for (const int64_t v : a) EXPECT_TRUE(v >= 0 && v < 1000);
  EXPECT_EQ(a, sample_without_replacement(1000, 128, 7));
  EXPECT_NE(a, sample_without_replacement(1000, 128, 8));
  const auto all = sample_without_replacement(50, 50, 3);
  for (int64_t i = 0; i < 50; ++i) EXPECT_EQ(all[static_cast<size_t>(i)], i);
}

TEST(CalibSampling, RoughlyUniform) {
  // Each of 10 values drawn 3 at a time over many seeds: every value near 30 % of the time.
  std::vector<int> hits(10, 0);
  for (uint64_t s = 0; s < 2000; ++s) {
    for (const int64_t v : sample_without_replacement(10, 3, s)) ++hits[static_cast<size_t>(v)];
  }
  for (const int h : hits) EXPECT_NEAR(h / 2000.0, 0.3, 0.05);
}

TEST(CalibSet, ReferenceCalibrationText) {
  CALQ_REQUIRE_SHARED("data/calib.txt");
  const auto path = testing::shared_dir() / "data/calib.txt";
  const CalibrationSet set =
      load_calibration_set(path, ref_tokenizer(), {.samples = 16, .seq_len = 128, .seed = 1, .separator = 2});
  ASSERT_EQ(set.samples.size(), 16u);
  for (const auto& s : set.samples) EXPECT_EQ(s.size(), 128u);
  EXPECT_GT(set.n_documents, 1);
  EXPECT_GE(set.n_windows, 16);
  EXPECT_LT(set.unknown_share, 0.05);
  EXPECT_EQ(set.file_sha256.size(), 64u);
  const CalibrationSet again =
      load_calibration_set(path, ref_tokenizer(), {.samples = 16, .seq_len = 128, .seed = 1, .separator = 2});
  EXPECT_EQ(set.samples, again.samples);
  const CalibrationSet other =
      load_calibration_set(path, ref_tokenizer(), {.samples = 16, .seq_len = 128, .seed = 2, .separator = 2});
  EXPECT_NE(set.samples, other.samples);
}

TEST(CalibSet, TooShortSaysHowManyWindows) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama/tokenizer.json");
  const auto p = write_file("calib_short", "A short text about the Linux kernel.\n\nAnother one.\n");
  const std::string msg =
      error_of([&] { load_calibration_set(p, ref_tokenizer(), {.samples = 128, .seq_len = 512}); });
  EXPECT_NE(msg.find("too short"), std::string::npos) << msg;
  EXPECT_NE(msg.find("0 windows"), std::string::npos) << msg;
  EXPECT_NE(msg.find("samples"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("--"), std::string::npos) << msg;
}

TEST(CalibSet, MostlyUnknownTextIsRefused) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama/tokenizer.json");
  // Text the tokenizer only covers by byte fallback (CJK, never in its English training data).
  std::string text;
  for (int i = 0; i < 400; ++i) text += "\xe9\xbe\x98\xe9\xbd\x89\xe9\xbd\x8a\xe9\xbe\x8d ";
  const auto p = write_file("calib_unknown", text);
  const std::string msg = error_of([&] { load_calibration_set(p, ref_tokenizer(), {.samples = 1, .seq_len = 16}); });
  EXPECT_NE(msg.find("unknown"), std::string::npos) << msg;
}

TEST(CalibSet, BadOptions) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama/tokenizer.json");
  const auto p = write_file("calib_opts", "some text\n");
  EXPECT_NE(error_of([&] { load_calibration_set(p, ref_tokenizer(), {.samples = 0}); }).find("samples must be at least 1"),
            std::string::npos);
  EXPECT_NE(error_of([&] { load_calibration_set(p, ref_tokenizer(), {.seq_len = 1}); }).find("seq_len must be at least 2"),
            std::string::npos);
}

}  // namespace
}  // namespace calq::io
