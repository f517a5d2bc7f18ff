// safetensors round trips (single file, sharded folders), writer layout and input checks, and the
// shared reference model. Malformed inputs are in safetensors_hostile_test.cpp.
#include "io/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/safetensors_test_util.h"
#include "support/shared_dir.h"

namespace calq::io {
namespace {

using test::expect_error;

std::vector<std::byte> read_bytes(const std::filesystem::path& path) {
  const auto file = MappedFile::open(path);
  return {file->bytes().begin(), file->bytes().end()};
}

// Test tensors of every loadable dtype, with their backing bytes kept alive by the fixture.
class SafetensorsRoundTrip : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = calq::testing::temp_dir("st_roundtrip");
    for (int i = 0; i < 6; ++i) f32_.push_back(0.25f * static_cast<float>(i) - 1.0f);
    for (int i = 0; i < 8; ++i) f16_.push_back(f32_to_f16(static_cast<float>(i) * 0.5f));
    for (int i = 0; i < 12; ++i) bf16_.push_back(f32_to_bf16(static_cast<float>(i) - 3.0f));
    big_.assign(1000, 0.125f);
    // Deliberately not in name order: the writer must sort.
    tensors_ = {
        {"layers.1.w", DType::kBF16, {3, 4}, std::as_bytes(std::span(bf16_))},
        {"a.bias", DType::kF32, {2, 3}, std::as_bytes(std::span(f32_))},
        {"layers.0.w", DType::kF16, {8}, std::as_bytes(std::span(f16_))},
        {"z.big", DType::kF32, {10, 100}, std::as_bytes(std::span(big_))},
        {"empty", DType::kF32, {0, 5}, {}},
    };
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  const TensorToWrite& original(std::string_view name) const {
    for (const auto& t : tensors_) {
      if (t.name == name) return t;
    }
    throw std::logic_error("no such test tensor");
  }

  void expect_same(const Tensor& got, const TensorToWrite& want) const {
    SCOPED_TRACE(want.name);
    EXPECT_EQ(got.dtype(), want.dtype);
    EXPECT_EQ(got.shape(), want.shape);
    ASSERT_EQ(got.nbytes(), want.data.size());
    if (!want.data.empty()) {
      EXPECT_EQ(std::memcmp(got.data(), want.data.data(), want.data.size()), 0);
    }
  }

  std::filesystem::path dir_;
  std::vector<float> f32_, big_;
  std::vector<uint16_t> f16_, bf16_;
  std::vector<TensorToWrite> tensors_;
};

TEST_F(SafetensorsRoundTrip, SingleFileWithMetadata) {
  const auto path = dir_ / "out.safetensors";
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"calq", "test"}};
  write_safetensors(path, tensors_, metadata);

  const auto file = SafetensorsFile::open(path);
  EXPECT_EQ(file.path(), path);
  EXPECT_EQ(file.metadata(), metadata);
  ASSERT_EQ(file.tensors().size(), tensors_.size());
  std::vector<std::string> names;
  for (const auto& info : file.tensors()) names.push_back(info.name);
  EXPECT_EQ(names,
            (std::vector<std::string>{"a.bias", "empty", "layers.0.w", "layers.1.w", "z.big"}));
  for (const auto& info : file.tensors()) {
    const TensorToWrite& want = original(info.name);
    EXPECT_EQ(info.dtype, want.dtype);
    EXPECT_EQ(info.shape, want.shape);
    EXPECT_EQ(info.end - info.begin, want.data.size());
    expect_same(file.tensor(info.name), want);
  }
  ASSERT_NE(file.find("layers.0.w"), nullptr);
  EXPECT_EQ(file.find("layers.0.w")->dtype, DType::kF16);
  // Values survive, not just bytes: BF16 [3, 4] element 5 is 5 - 3.
  EXPECT_EQ(file.tensor("layers.1.w").to_f32().f32()[5], 2.0f);
}

TEST_F(SafetensorsRoundTrip, WriterLayoutIsDeterministicAndAligned) {
  const auto first = dir_ / "first.safetensors";
  const auto second = dir_ / "second.safetensors";
  write_safetensors(first, tensors_, {{"format", "pt"}});
  std::vector<TensorToWrite> reversed(tensors_.rbegin(), tensors_.rend());
  write_safetensors(second, reversed, {{"format", "pt"}});
  const auto bytes = read_bytes(first);
  EXPECT_EQ(bytes, read_bytes(second));  // input order does not matter

  uint64_t header_len = 0;
  for (size_t i = 0; i < 8; ++i) header_len |= std::to_integer<uint64_t>(bytes[i]) << (8 * i);
  EXPECT_EQ(header_len % 8, 0u);
  const std::string header(reinterpret_cast<const char*>(bytes.data() + 8), header_len);
  EXPECT_EQ(header.rfind(R"({"__metadata__":{"format":"pt"},"a.bias":)", 0), 0u) << header;
  EXPECT_EQ(header.find_last_not_of(' '), header.find_last_of('}'));  // padded with spaces only

  // Tensors are contiguous in name order, with no gap before the first or after the last.
  const auto file = SafetensorsFile::open(first);
  uint64_t expected_begin = 0;
  for (const auto& info : file.tensors()) {
    EXPECT_EQ(info.begin, expected_begin) << info.name;
    expected_begin = info.end;
  }
  EXPECT_EQ(8 + header_len + expected_begin, bytes.size());
}

TEST_F(SafetensorsRoundTrip, NoMetadataMeansNoMetadataKey) {
  const auto path = dir_ / "plain.safetensors";
  write_safetensors(path, tensors_);
  const auto bytes = read_bytes(path);
  const std::string text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  EXPECT_EQ(text.find("__metadata__"), std::string::npos);
  EXPECT_TRUE(SafetensorsFile::open(path).metadata().empty());
}

TEST_F(SafetensorsRoundTrip, TensorsAreZeroCopyAndOutliveTheFile) {
  const auto path = dir_ / "view.safetensors";
  write_safetensors(path, tensors_);
  Tensor kept;
  {
    const auto file = SafetensorsFile::open(path);
    kept = file.tensor("z.big");
    EXPECT_FALSE(kept.owns_data());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(kept.data()) % 8, 0u);  // padded header keeps alignment
  }
  // The SafetensorsFile is gone; the view's keep-alive still holds the mapping.
  expect_same(kept, original("z.big"));
}

TEST_F(SafetensorsRoundTrip, ShardedFolderTwoShards) {
  const auto folder = dir_ / "sharded";
  write_sharded_safetensors(folder, tensors_, 2, {{"format", "pt"}});
  EXPECT_TRUE(std::filesystem::exists(folder / "model-00001-of-00002.safetensors"));
  EXPECT_TRUE(std::filesystem::exists(folder / "model-00002-of-00002.safetensors"));
  EXPECT_FALSE(std::filesystem::exists(folder / "model.safetensors"));

  const auto index = nlohmann::json::parse(read_text_file(folder / "model.safetensors.index.json"));
  uint64_t total = 0;
  for (const auto& t : tensors_) total += t.data.size();
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), total);
  ASSERT_EQ(index["weight_map"].size(), tensors_.size());
  // Balanced by bytes in name order: z.big (4000 of 4064 bytes) gets the second shard to itself.
  EXPECT_EQ(index["weight_map"]["z.big"], "model-00002-of-00002.safetensors");
  EXPECT_EQ(index["weight_map"]["a.bias"], "model-00001-of-00002.safetensors");

  const auto model = SafetensorsModel::open_folder(folder);
  EXPECT_EQ(model.folder(), folder);
  EXPECT_EQ(model.files().size(), 2u);
  EXPECT_EQ(model.names(),
            (std::vector<std::string>{"a.bias", "empty", "layers.0.w", "layers.1.w", "z.big"}));
  for (const auto& t : tensors_) {
    EXPECT_TRUE(model.contains(t.name));
    EXPECT_EQ(model.info(t.name).shape, t.shape);
    expect_same(model.tensor(t.name), t);
  }
  for (const auto& f : model.files()) EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_FALSE(model.contains("nope"));
  expect_error([&] { model.tensor("nope"); }, ErrorKind::kNotFound,
               {folder.string(), "tensor 'nope'"});
  expect_error([&] { model.info("nope"); }, ErrorKind::kNotFound,
               {folder.string(), "tensor 'nope'"});
}

TEST_F(SafetensorsRoundTrip, ShardedFolderEveryShardNonEmpty) {
  // The big tensor is last in name order, so byte targets alone would keep every other tensor in
  // the first shard and leave shards 2..3 empty; each shard must still get a tensor.
  const auto folder = dir_ / "skewed";
  write_sharded_safetensors(folder, tensors_, 4);
  const auto model = SafetensorsModel::open_folder(folder);
  ASSERT_EQ(model.files().size(), 4u);
  size_t count = 0;
  for (const auto& f : model.files()) {
    EXPECT_GE(f.tensors().size(), 1u) << f.path();
    count += f.tensors().size();
  }
  EXPECT_EQ(count, tensors_.size());
  EXPECT_EQ(model.files().back().path().filename(), "model-00004-of-00004.safetensors");
  for (const auto& t : tensors_) expect_same(model.tensor(t.name), t);
}

TEST_F(SafetensorsRoundTrip, SingleFileFolder) {
  const auto folder = dir_ / "single";
  write_sharded_safetensors(folder, tensors_, 1);
  EXPECT_TRUE(std::filesystem::exists(folder / "model.safetensors"));
  EXPECT_FALSE(std::filesystem::exists(folder / "model.safetensors.index.json"));
  const auto model = SafetensorsModel::open_folder(folder);
  ASSERT_EQ(model.files().size(), 1u);
  for (const auto& t : tensors_) expect_same(model.tensor(t.name), t);
}

// --- streamed writing (tensors produced while the file is written) ---

// The fixture's tensors as producers copying their bytes; `fail_at` throws instead for that name.
std::vector<TensorToProduce> produced(const std::vector<TensorToWrite>& tensors, std::string_view fail_at = {}) {
  std::vector<TensorToProduce> out;
  for (const TensorToWrite& t : tensors) {
    const bool fails = t.name == fail_at;
    out.push_back({t.name, t.dtype, t.shape, [data = t.data, fails](std::span<std::byte> dst) {
                     if (fails) throw std::runtime_error("producer failed");
                     ASSERT_EQ(dst.size(), data.size());
                     if (!dst.empty()) std::memcpy(dst.data(), data.data(), dst.size());
                   }});
  }
  return out;
}

TEST_F(SafetensorsRoundTrip, StreamedWriterGivesTheSpanWritersBytes) {
  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  write_safetensors(dir_ / "spans.safetensors", tensors_, metadata);
  const std::vector<TensorToProduce> producers = produced(tensors_);
  write_safetensors_streamed(dir_ / "streamed.safetensors", producers, metadata);
  EXPECT_EQ(read_bytes(dir_ / "spans.safetensors"), read_bytes(dir_ / "streamed.safetensors"));
  // One shard: the same file under the folder's name, no index.
  write_sharded_safetensors_streamed(dir_ / "one", producers, 1'000'000, metadata);
  EXPECT_EQ(read_bytes(dir_ / "spans.safetensors"), read_bytes(dir_ / "one" / "model.safetensors"));
  EXPECT_FALSE(std::filesystem::exists(dir_ / "one" / "model.safetensors.index.json"));
}

TEST_F(SafetensorsRoundTrip, StreamedShardsFollowSavePretrainedRule) {
  // Name order: a.bias 24, empty 0, layers.0.w 16 (40 in all, at the limit), layers.1.w 24, z.big
  // 4000 (above the limit: a shard of its own).
  const auto folder = dir_ / "shards";
  std::vector<std::string> seen;
  write_sharded_safetensors_streamed(folder, produced(tensors_), 40, {{"format", "pt"}},
                                     [&](const TensorToProduce& t, size_t index, size_t total, const std::string& file) {
                                       EXPECT_EQ(index, seen.size());
                                       EXPECT_EQ(total, tensors_.size());
                                       seen.push_back(t.name + "@" + file);
                                     });
  EXPECT_EQ(seen, (std::vector<std::string>{"a.bias@model-00001-of-00003.safetensors",
                                            "empty@model-00001-of-00003.safetensors",
                                            "layers.0.w@model-00001-of-00003.safetensors",
                                            "layers.1.w@model-00002-of-00003.safetensors",
                                            "z.big@model-00003-of-00003.safetensors"}));
  const auto index = nlohmann::json::parse(read_text_file(folder / "model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), 4064u);
  EXPECT_EQ(index["weight_map"]["layers.1.w"], "model-00002-of-00003.safetensors");
  const auto model = SafetensorsModel::open_folder(folder);
  ASSERT_EQ(model.files().size(), 3u);
  for (const auto& t : tensors_) expect_same(model.tensor(t.name), t);
  expect_error([&] { write_sharded_safetensors_streamed(dir_ / "zero", produced(tensors_), 0); },
               ErrorKind::kInvalidArgument, {"max_shard_bytes"});
  std::vector<TensorToProduce> none = produced(tensors_);
  none[2].produce = nullptr;
  expect_error([&] { write_safetensors_streamed(dir_ / "none.safetensors", none); }, ErrorKind::kInvalidArgument,
               {"tensor 'layers.0.w'", "producer"});
}

TEST_F(SafetensorsRoundTrip, ProducerErrorLeavesNoFile) {
  EXPECT_THROW(write_safetensors_streamed(dir_ / "x.safetensors", produced(tensors_, "layers.1.w")),
               std::runtime_error);
  // The second shard fails: the first one goes again, and no index is written.
  EXPECT_THROW(write_sharded_safetensors_streamed(dir_ / "s", produced(tensors_, "layers.1.w"), 40),
               std::runtime_error);
  EXPECT_TRUE(std::filesystem::is_empty(dir_ / "s"));
  std::vector<std::string> left;
  for (const auto& e : std::filesystem::directory_iterator(dir_)) left.push_back(e.path().filename().string());
  EXPECT_EQ(left, std::vector<std::string>{"s"});
}

// --- writer input checks (caller bugs: kInvalidArgument) ---

TEST_F(SafetensorsRoundTrip, WriterRejectsSizeMismatch) {
  std::vector<TensorToWrite> bad = {{"w", DType::kF32, {2, 4}, std::as_bytes(std::span(f32_))}};
  expect_error([&] { write_safetensors(dir_ / "bad.safetensors", bad); },
               ErrorKind::kInvalidArgument, {"tensor 'w'", "[2, 4]"});
  EXPECT_FALSE(std::filesystem::exists(dir_ / "bad.safetensors"));
}

TEST_F(SafetensorsRoundTrip, WriterRejectsDuplicateNames) {
  std::vector<TensorToWrite> bad = tensors_;
  bad.push_back(tensors_[1]);
  expect_error([&] { write_safetensors(dir_ / "bad.safetensors", bad); },
               ErrorKind::kInvalidArgument, {"tensor 'a.bias'", "more than once"});
}

TEST_F(SafetensorsRoundTrip, WriterRejectsReservedName) {
  std::vector<TensorToWrite> bad = {
      {"__metadata__", DType::kF32, {6}, std::as_bytes(std::span(f32_))}};
  expect_error([&] { write_safetensors(dir_ / "bad.safetensors", bad); },
               ErrorKind::kInvalidArgument, {"__metadata__", "reserved"});
}

TEST_F(SafetensorsRoundTrip, WriterRejectsNegativeDimension) {
  std::vector<TensorToWrite> bad = {{"w", DType::kF32, {-1, -6}, std::as_bytes(std::span(f32_))}};
  expect_error([&] { write_safetensors(dir_ / "bad.safetensors", bad); },
               ErrorKind::kInvalidArgument, {"tensor 'w'", "negative"});
}

TEST_F(SafetensorsRoundTrip, WriterRejectsInvalidUtf8Name) {
  std::vector<TensorToWrite> bad = {{"w\xff", DType::kF32, {6}, std::as_bytes(std::span(f32_))}};
  expect_error([&] { write_safetensors(dir_ / "bad.safetensors", bad); },
               ErrorKind::kInvalidArgument, {"bad.safetensors"});
}

TEST_F(SafetensorsRoundTrip, ShardedWriterRejectsBadShardCounts) {
  expect_error([&] { write_sharded_safetensors(dir_ / "s0", tensors_, 0); },
               ErrorKind::kInvalidArgument, {"s0", "num_shards"});
  expect_error([&] { write_sharded_safetensors(dir_ / "s9", tensors_, 9); },
               ErrorKind::kInvalidArgument, {"s9", "9 shards"});
}

TEST_F(SafetensorsRoundTrip, WriteIntoMissingFolderFails) {
  expect_error([&] { write_safetensors(dir_ / "no" / "such" / "x.safetensors", tensors_); },
               ErrorKind::kIo, {"x.safetensors"});
}

// --- the shared reference model ---

constexpr const char* kRefModel = "models/calq-ref-llama/model.safetensors";

TEST(SafetensorsReference, ReadsRefLlama) {
  CALQ_REQUIRE_SHARED(kRefModel);
  const auto path = calq::testing::shared_dir() / kRefModel;
  const auto file = SafetensorsFile::open(path);
  // Read from the header with python3 json/struct: 56 tensors (6 layers × 9 + embeddings + final
  // norm; the LM head is tied), all BF16, metadata {"format": "pt"}.
  EXPECT_EQ(file.tensors().size(), 56u);
  EXPECT_EQ(file.metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  for (const auto& info : file.tensors()) EXPECT_EQ(info.dtype, DType::kBF16) << info.name;

  const auto* embed = file.find("model.embed_tokens.weight");
  ASSERT_NE(embed, nullptr);
  EXPECT_EQ(embed->shape, (Shape{16384, 512}));
  EXPECT_EQ(embed->begin, 0u);
  EXPECT_EQ(embed->end, 16777216u);
  EXPECT_EQ(file.find("model.layers.0.self_attn.k_proj.weight")->shape, (Shape{128, 512}));
  EXPECT_EQ(file.find("model.layers.3.mlp.down_proj.weight")->shape, (Shape{512, 1536}));
  EXPECT_EQ(file.find("model.layers.5.mlp.gate_proj.weight")->shape, (Shape{1536, 512}));
  EXPECT_EQ(file.find("model.norm.weight")->shape, (Shape{512}));
  EXPECT_EQ(file.find("lm_head.weight"), nullptr);

  // First elements, as raw little-endian BF16 read with python3.
  const Tensor norm = file.tensor("model.norm.weight");
  const uint8_t norm_head[] = {0xd2, 0x3f, 0xd6, 0x3f, 0xd2, 0x3f, 0xda, 0x3f};
  EXPECT_EQ(std::memcmp(norm.data(), norm_head, sizeof norm_head), 0);
  EXPECT_FLOAT_EQ(norm.to_f32().f32()[0], 1.640625f);  // bf16 0x3fd2
  const uint8_t embed_head[] = {0xc5, 0x3d, 0xa7, 0xbd, 0xd3, 0xbd, 0x98, 0xbd};
  EXPECT_EQ(std::memcmp(file.tensor("model.embed_tokens.weight").data(), embed_head, 8), 0);
}

TEST(SafetensorsReference, OpensRefLlamaFolder) {
  CALQ_REQUIRE_SHARED(kRefModel);
  const auto folder = calq::testing::shared_dir() / "models/calq-ref-llama";
  const auto model = SafetensorsModel::open_folder(folder);
  EXPECT_EQ(model.files().size(), 1u);
  EXPECT_EQ(model.names().size(), 56u);
  EXPECT_EQ(model.info("model.layers.2.self_attn.q_proj.weight").shape, (Shape{512, 512}));
  const uint8_t v_head[] = {0x09, 0x39, 0xd7, 0xbc};
  EXPECT_EQ(std::memcmp(model.tensor("model.layers.5.self_attn.v_proj.weight").data(), v_head, 4),
            0);
}

}  // namespace
}  // namespace calq::io
