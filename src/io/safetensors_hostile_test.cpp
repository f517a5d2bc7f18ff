// Malformed and hostile safetensors files and model folders, built byte by byte. Every case checks
// the error kind and that the message names the file and the offending tensor or key.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "io/safetensors_test_util.h"
#include "support/shared_dir.h"

namespace calq::io {
namespace {

using test::expect_error;
using test::write_raw;

class SafetensorsHostile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = calq::testing::temp_dir("st_hostile");
    path_ = dir_ / "model.safetensors";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Writes a file with `header` and `data_bytes` zero bytes of data, expects open() to fail.
  std::string expect_open_error(std::string_view header, size_t data_bytes, ErrorKind kind,
                                std::initializer_list<std::string_view> needles) {
    write_raw(path_, header, std::vector<uint8_t>(data_bytes));
    return expect_error([&] { SafetensorsFile::open(path_); }, kind, needles);
  }

  std::filesystem::path dir_;
  std::filesystem::path path_;
};

// --- the 8-byte length prefix ---

TEST_F(SafetensorsHostile, FileShorterThanLengthPrefix) {
  const std::vector<std::byte> five(5, std::byte{1});
  write_file_atomic(path_, five);
  expect_error([&] { SafetensorsFile::open(path_); }, ErrorKind::kFormat,
               {path_.string(), "truncated", "5 bytes"});
}

TEST_F(SafetensorsHostile, EmptyFile) {
  write_file_atomic(path_, {});
  expect_error([&] { SafetensorsFile::open(path_); }, ErrorKind::kFormat,
               {path_.string(), "truncated"});
}

TEST_F(SafetensorsHostile, HeaderLengthBeyondFile) {
  write_raw(path_, "{}", {}, 1000);  // file is 10 bytes
  expect_error([&] { SafetensorsFile::open(path_); }, ErrorKind::kFormat,
               {path_.string(), "header length 1000 exceeds file size 10"});
}

TEST_F(SafetensorsHostile, HeaderLengthNearUint64Max) {
  write_raw(path_, "{}", {}, ~uint64_t{0});  // must not wrap around in 8 + N
  expect_error([&] { SafetensorsFile::open(path_); }, ErrorKind::kFormat,
               {path_.string(), "exceeds file size"});
}

TEST_F(SafetensorsHostile, HeaderLengthAbsurd) {
  // A sparse file just over the limit: costs no disk, and the header is never parsed.
  constexpr uint64_t kLen = 100'000'001;
  write_raw(path_, "{", {}, kLen);
  std::filesystem::resize_file(path_, 8 + kLen + 16);
  expect_error([&] { SafetensorsFile::open(path_); }, ErrorKind::kFormat,
               {path_.string(), "header length 100000001 exceeds the"});
}

// --- header JSON ---

TEST_F(SafetensorsHostile, MalformedHeaderJson) {
  expect_open_error(R"({"w": {"dtype": "F32", )", 0, ErrorKind::kFormat,
                    {path_.string(), "not valid JSON"});
}

// Found by fuzz_safetensors: a number too large for a double makes nlohmann throw out_of_range,
// not parse_error; it escaped as a foreign exception and aborted the process.
TEST_F(SafetensorsHostile, HeaderNumberOverflow) {
  expect_open_error(R"({"q": 77e777777})", 0, ErrorKind::kFormat, {path_.string(), "not valid JSON"});
}

TEST_F(SafetensorsHostile, HeaderNotAnObject) {
  expect_open_error(R"([1, 2, 3])", 0, ErrorKind::kFormat,
                    {path_.string(), "must be a JSON object", "array"});
}

TEST_F(SafetensorsHostile, DuplicateTensorName) {
  expect_open_error(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
                    R"( "w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
                    8, ErrorKind::kFormat, {path_.string(), "'w'", "more than once"});
}

TEST_F(SafetensorsHostile, TensorEntryNotAnObject) {
  expect_open_error(R"({"w": [1, 2]})", 0, ErrorKind::kFormat,
                    {path_.string(), "tensor 'w'", "must be an object"});
}

TEST_F(SafetensorsHostile, MissingDataOffsets) {
  expect_open_error(R"({"w": {"dtype": "F32", "shape": [2]}})", 8, ErrorKind::kFormat,
                    {path_.string(), "tensor 'w'", "missing key 'data_offsets'"});
}

TEST_F(SafetensorsHostile, MissingDtype) {
  expect_open_error(R"({"w": {"shape": [2], "data_offsets": [0, 8]}})", 8, ErrorKind::kFormat,
                    {path_.string(), "tensor 'w'", "missing key 'dtype'"});
}

TEST_F(SafetensorsHostile, MissingShape) {
  expect_open_error(R"({"w": {"dtype": "F32", "data_offsets": [0, 8]}})", 8, ErrorKind::kFormat,
                    {path_.string(), "tensor 'w'", "missing key 'shape'"});
}

TEST_F(SafetensorsHostile, DtypeNotAString) {
  expect_open_error(R"({"w": {"dtype": 7, "shape": [2], "data_offsets": [0, 8]}})", 8,
                    ErrorKind::kFormat, {path_.string(), "tensor 'w'", "key 'dtype'"});
}

TEST_F(SafetensorsHostile, ShapeNotAnArray) {
  expect_open_error(R"({"w": {"dtype": "F32", "shape": "2", "data_offsets": [0, 8]}})", 8,
                    ErrorKind::kFormat, {path_.string(), "tensor 'w'", "key 'shape'"});
}

TEST_F(SafetensorsHostile, ShapeHoldsFloat) {
  expect_open_error(R"({"w": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 8]}})", 8,
                    ErrorKind::kFormat, {path_.string(), "tensor 'w'", "key 'shape'"});
}

TEST_F(SafetensorsHostile, DataOffsetsWrongLength) {
  expect_open_error(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4, 8]}})", 8,
                    ErrorKind::kFormat, {path_.string(), "tensor 'w'", "key 'data_offsets'"});
}

TEST_F(SafetensorsHostile, DataOffsetsNegative) {
  expect_open_error(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}})", 8,
                    ErrorKind::kFormat, {path_.string(), "tensor 'w'", "key 'data_offsets'"});
}

TEST_F(SafetensorsHostile, MetadataValueNotAString) {
  expect_open_error(R"({"__metadata__": {"format": 1}})", 0, ErrorKind::kFormat,
                    {path_.string(), "__metadata__", "'format'"});
}

TEST_F(SafetensorsHostile, MetadataNotAnObject) {
  expect_open_error(R"({"__metadata__": "pt"})", 0, ErrorKind::kFormat,
                    {path_.string(), "__metadata__"});
}

// --- dtypes ---

TEST_F(SafetensorsHostile, UnknownDtype) {
  expect_open_error(R"({"w": {"dtype": "Q9", "shape": [2], "data_offsets": [0, 8]}})", 8,
                    ErrorKind::kUnsupported, {path_.string(), "tensor 'w'", "unknown dtype 'Q9'"});
}

TEST_F(SafetensorsHostile, UnsupportedDtypeF64) {
  expect_open_error(
      R"({"w": {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]}})", 16,
      ErrorKind::kUnsupported,
      {path_.string(), "tensor 'w'", "dtype F64 is not supported (calq reads F32, F16, BF16)"});
}

TEST_F(SafetensorsHostile, UnsupportedDtypeI32) {
  // I32 is a core DType, but not something open() loads as model weights.
  expect_open_error(R"({"ids": {"dtype": "I32", "shape": [2], "data_offsets": [0, 8]}})", 8,
                    ErrorKind::kUnsupported,
                    {path_.string(), "tensor 'ids'", "dtype I32 is not supported"});
}

// --- shapes and offsets ---

TEST_F(SafetensorsHostile, NegativeDimension) {
  expect_open_error(R"({"w": {"dtype": "F32", "shape": [2, -3], "data_offsets": [0, 8]}})", 8,
                    ErrorKind::kFormat, {path_.string(), "tensor 'w'", "negative dimension -3"});
}

TEST_F(SafetensorsHostile, ElementCountOverflow) {
  // 2^32 * 2^32 wraps to 0 in 64 bits, which would "match" an empty byte range.
  expect_open_error(
      R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296, 0], "data_offsets": [0, 0]}})", 0,
      ErrorKind::kFormat, {path_.string(), "tensor 'w'", "overflows"});
}

TEST_F(SafetensorsHostile, ByteCountOverflow) {
  // numel fits in int64 but numel * 4 bytes does not fit in 64 bits.
  expect_open_error(
      R"({"w": {"dtype": "F32", "shape": [4611686018427387904], "data_offsets": [0, 0]}})", 0,
      ErrorKind::kFormat, {path_.string(), "tensor 'w'", "overflows"});
}

TEST_F(SafetensorsHostile, ShapeTimesDtypeSizeMismatch) {
  expect_open_error(
      R"({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}})", 24,
      ErrorKind::kFormat,
      {path_.string(), "tensor 'w'", "shape [2, 3] × F32 = 24 bytes but data_offsets span 20"});
}

TEST_F(SafetensorsHostile, BeginGreaterThanEnd) {
  expect_open_error(R"({"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 4]}})", 8,
                    ErrorKind::kFormat, {path_.string(), "tensor 'w'", "begin > end"});
}

TEST_F(SafetensorsHostile, OffsetsOutOfBounds) {
  expect_open_error(R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [4, 20]}})", 8,
                    ErrorKind::kFormat, {path_.string(), "tensor 'w'", "out of bounds"});
}

TEST_F(SafetensorsHostile, OverlappingTensors) {
  expect_open_error(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},)"
                    R"( "b": {"dtype": "F32", "shape": [1], "data_offsets": [20, 24]},)"
                    R"( "c": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}})",
                    24, ErrorKind::kFormat, {path_.string(), "'a'", "'c'", "overlap"});
}

TEST_F(SafetensorsHostile, FileCutInsideData) {
  // A valid file whose tail was lost: the header promises more data than is there.
  const std::vector<float> values(16, 1.5f);
  const std::vector<TensorToWrite> tensors = {
      {"a", DType::kF32, {16}, std::as_bytes(std::span(values))},
      {"b", DType::kF32, {16}, std::as_bytes(std::span(values))}};
  write_safetensors(path_, tensors);
  std::filesystem::resize_file(path_, std::filesystem::file_size(path_) - 10);
  expect_error([&] { SafetensorsFile::open(path_); }, ErrorKind::kFormat,
               {path_.string(), "tensor 'b'", "out of bounds", "truncated"});
}

TEST_F(SafetensorsHostile, HolesAndTrailingGapAreAllowed) {
  write_raw(path_,
            R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},)"
            R"( "b": {"dtype": "BF16", "shape": [2], "data_offsets": [12, 16]},)"
            R"( "e": {"dtype": "F16", "shape": [0, 3], "data_offsets": [8, 8]},)"
            R"( "s": {"dtype": "F32", "shape": [], "data_offsets": [16, 20]}})",
            std::vector<uint8_t>(32, 0));
  const auto file = SafetensorsFile::open(path_);
  ASSERT_EQ(file.tensors().size(), 4u);
  EXPECT_EQ(file.tensor("e").numel(), 0);
  EXPECT_EQ(file.tensor("s").numel(), 1);  // rank-0 scalar
  EXPECT_EQ(file.tensor("b").shape(), (Shape{2}));
}

TEST_F(SafetensorsHostile, MissingTensorLookup) {
  write_raw(path_, R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})",
            {0, 0, 0, 0});
  const auto file = SafetensorsFile::open(path_);
  EXPECT_EQ(file.find("foo"), nullptr);
  expect_error([&] { file.tensor("foo"); }, ErrorKind::kNotFound,
               {path_.string(), "tensor 'foo' not found"});
}

// --- model folders ---

class SafetensorsFolderHostile : public SafetensorsHostile {
 protected:
  void write_shard(const std::string& name, const std::string& tensor) {
    const std::vector<float> values = {1.0f, 2.0f};
    const std::vector<TensorToWrite> tensors = {
        {tensor, DType::kF32, {2}, std::as_bytes(std::span(values))}};
    write_safetensors(dir_ / name, tensors);
  }
  void write_index(const std::string& json) {
    std::ofstream(dir_ / "model.safetensors.index.json") << json;
  }
  std::filesystem::path index_path() const { return dir_ / "model.safetensors.index.json"; }
};

TEST_F(SafetensorsFolderHostile, NoModelFiles) {
  expect_error([&] { SafetensorsModel::open_folder(dir_); }, ErrorKind::kNotFound,
               {dir_.string(), "model.safetensors"});
}

TEST_F(SafetensorsFolderHostile, IndexPointsAtMissingShard) {
  write_shard("a.safetensors", "x");
  write_index(R"({"weight_map": {"x": "a.safetensors", "y": "gone.safetensors"}})");
  expect_error([&] { SafetensorsModel::open_folder(dir_); }, ErrorKind::kNotFound,
               {index_path().string(), "gone.safetensors", "'y'"});
}

TEST_F(SafetensorsFolderHostile, IndexNamesTensorAbsentFromShard) {
  write_shard("a.safetensors", "x");
  write_index(R"({"weight_map": {"x": "a.safetensors", "z": "a.safetensors"}})");
  expect_error([&] { SafetensorsModel::open_folder(dir_); }, ErrorKind::kNotFound,
               {(dir_ / "a.safetensors").string(), "tensor 'z'"});
}

TEST_F(SafetensorsFolderHostile, ShardPathEscapesFolder) {
  write_index(R"({"weight_map": {"x": "../etc/model.safetensors"}})");
  expect_error([&] { SafetensorsModel::open_folder(dir_); }, ErrorKind::kFormat,
               {index_path().string(), "tensor 'x'", "../etc/model.safetensors"});
}

TEST_F(SafetensorsFolderHostile, ShardPathAbsolute) {
  write_index(R"({"weight_map": {"x": "/tmp/model.safetensors"}})");
  expect_error([&] { SafetensorsModel::open_folder(dir_); }, ErrorKind::kFormat,
               {index_path().string(), "tensor 'x'", "not a plain file name"});
}

TEST_F(SafetensorsFolderHostile, IndexNotJson) {
  write_index("{\"weight_map\": ");
  expect_error([&] { SafetensorsModel::open_folder(dir_); }, ErrorKind::kFormat,
               {index_path().string(), "not valid JSON"});
}

TEST_F(SafetensorsFolderHostile, IndexWithoutWeightMap) {
  write_index(R"({"metadata": {"total_size": 8}})");
  expect_error([&] { SafetensorsModel::open_folder(dir_); }, ErrorKind::kFormat,
               {index_path().string(), "weight_map"});
}

TEST_F(SafetensorsFolderHostile, IndexShardNotAString) {
  write_index(R"({"weight_map": {"x": 3}})");
  expect_error([&] { SafetensorsModel::open_folder(dir_); }, ErrorKind::kFormat,
               {index_path().string(), "tensor 'x'"});
}

TEST_F(SafetensorsFolderHostile, BadShardErrorNamesShard) {
  write_raw(dir_ / "a.safetensors", "{", {});
  write_index(R"({"weight_map": {"x": "a.safetensors"}})");
  expect_error([&] { SafetensorsModel::open_folder(dir_); }, ErrorKind::kFormat,
               {(dir_ / "a.safetensors").string(), "not valid JSON"});
}

}  // namespace
}  // namespace calq::io
