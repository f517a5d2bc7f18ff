// safetensors reading and writing (https://github.com/huggingface/safetensors format):
//   [u64 little-endian N][N bytes of JSON header][data section]
// The header maps tensor names to {"dtype", "shape", "data_offsets": [begin, end)} (offsets are
// relative to the data section) plus an optional "__metadata__" map of string to string.
//
// Contract: open() validates the whole header up front — header length within the file, valid
// JSON object, known dtype (F32/F16/BF16 load, and with SafetensorsOpenOptions::quantized also I32, I64,
// U8 and F8_E4M3; others are rejected with a clear message), shape of
// non-negative ints, offsets within the data section, end - begin == numel * dtype size, no two
// tensors overlapping — and throws calq::Error naming the file and the tensor/key on any violation.
// Tensors are zero-copy views into the memory map.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/mapped_file.h"
#include "core/tensor.h"

namespace calq::io {

// quantized: also load the dtypes of quantized checkpoints' tensors (GPTQ/AWQ/compressed-tensors packed
// words and zero points, shapes, FP8 weights: I32, I64, U8, F8_E4M3). Off, those are kUnsupported at
// open(), so a reader of float weights never meets them.
struct SafetensorsOpenOptions {
  bool quantized = false;
};

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  uint64_t begin = 0;  // byte offsets relative to the data section
  uint64_t end = 0;
};

class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::filesystem::path& path, const SafetensorsOpenOptions& options = {});

  const std::filesystem::path& path() const { return file_->path(); }
  // In header (alphabetical by name) order.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const TensorInfo* find(std::string_view name) const;  // nullptr if absent
  // Zero-copy view; throws ErrorKind::kNotFound naming the file and the tensor if absent.
  Tensor tensor(std::string_view name) const;

 private:
  std::shared_ptr<const MappedFile> file_;
  uint64_t data_start_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a Hugging Face model folder: `model.safetensors`, or the shards listed in
// `model.safetensors.index.json` ("weight_map": tensor name -> shard file). A tensor listed in the
// index but absent from its shard, or a shard that is missing, is an error naming the file.
class SafetensorsModel {
 public:
  static SafetensorsModel open_folder(const std::filesystem::path& folder,
                                      const SafetensorsOpenOptions& options = {});

  const std::filesystem::path& folder() const { return folder_; }
  std::vector<std::string> names() const;  // sorted
  bool contains(std::string_view name) const;
  const TensorInfo& info(std::string_view name) const;  // throws kNotFound naming folder+tensor
  Tensor tensor(std::string_view name) const;           // throws kNotFound naming folder+tensor
  const std::vector<SafetensorsFile>& files() const { return files_; }

 private:
  std::filesystem::path folder_;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, size_t, std::less<>> index_;  // name -> files_ position
};

struct TensorToWrite {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  std::span<const std::byte> data;  // numel * dtype size bytes
};

// A tensor whose bytes are made while the file is written: `produce` is given a buffer of exactly
// numel × dtype size bytes and must write every byte of it (the buffer is reused from tensor to
// tensor). An exception from it stops the write and propagates; no file is left.
struct TensorToProduce {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  std::function<void(std::span<std::byte>)> produce;
};

// Writes one safetensors file atomically (temp file + rename). The header is padded with spaces to
// a multiple of 8 bytes and tensors are laid out in name order, so output is deterministic.
// Invalid input (data size != numel * dtype size, negative dimension, duplicate or reserved
// "__metadata__" name, non-UTF-8 names, a TensorToProduce without `produce`) throws
// ErrorKind::kInvalidArgument before anything is written. Any core DType can be written
// (SafetensorsFile::open reads back F32/F16/BF16, and the integer and FP8 dtypes of quantized
// checkpoints with SafetensorsOpenOptions::quantized). The header is made from the names and shapes
// alone and written first; given tensors are written from their spans as they are, produced ones
// one at a time through one buffer of the largest produced tensor's size — the memory the write
// needs, whatever the file's size. The two forms give the same bytes for the same tensors.
void write_safetensors(const std::filesystem::path& path, std::span<const TensorToWrite> tensors,
                       const std::map<std::string, std::string>& metadata = {});
void write_safetensors_streamed(const std::filesystem::path& path, std::span<const TensorToProduce> tensors,
                                const std::map<std::string, std::string>& metadata = {});

// Writes `tensors` as `num_shards` files model-0000i-of-0000n.safetensors plus
// model.safetensors.index.json in `folder` (tensors assigned to shards in name order, balanced by
// bytes). num_shards == 1 writes a single model.safetensors and no index. `folder` is created if
// missing; shards are written before the index, so a reader never sees an index without its
// shards. Every shard gets `metadata` (e.g. {"format": "pt"}, as Hugging Face writes).
// num_shards == 0 or more shards than tensors is kInvalidArgument (every shard holds a tensor).
void write_sharded_safetensors(const std::filesystem::path& folder,
                               std::span<const TensorToWrite> tensors, size_t num_shards,
                               const std::map<std::string, std::string>& metadata = {});

// Called before each tensor is produced: the tensor, its place in the write (0-based, name order)
// out of `total`, and the file it goes into. May throw (e.g. to cancel), as a producer may.
using ShardProgress =
    std::function<void(const TensorToProduce& tensor, size_t index, size_t total, const std::string& file)>;

// Streamed and sharded as transformers' save_pretrained shards (max_shard_size): tensors in name
// order fill a shard until the next one would take it above `max_shard_bytes`, which then starts
// the next shard; a tensor larger than the limit gets a shard of its own. One shard is written as
// model.safetensors without an index, more as write_sharded_safetensors names them, shards first,
// index last (its total_size the sum of the tensors' bytes). Memory and checks as
// write_safetensors_streamed, all before the first byte; max_shard_bytes == 0 is kInvalidArgument.
// On any error the shards this call wrote are removed again and no index is written.
void write_sharded_safetensors_streamed(const std::filesystem::path& folder,
                                        std::span<const TensorToProduce> tensors, uint64_t max_shard_bytes,
                                        const std::map<std::string, std::string>& metadata = {},
                                        const ShardProgress& progress = {});

}  // namespace calq::io
