// GGUF (llama.cpp's model file format), versions 2 and 3: reader and writer.
//
// Layout (little-endian): magic "GGUF", u32 version, u64 tensor_count, u64 kv_count, then
// kv_count metadata entries (string key, u32 value type, value), then tensor_count tensor infos
// (string name, u32 n_dims, n_dims × u64 ne (ne[0] is the fastest-varying dimension), u32 ggml
// type, u64 offset relative to the data section), padding to `general.alignment` (default 32),
// then the data section. Strings are u64 length + bytes (no terminator).
//
// Contract:
//  * GgufFile::open() memory-maps the file and validates everything before returning: magic,
//    version (2 or 3), counts and string/array lengths against the bytes that remain (so hostile
//    counts never cause huge allocations), value types, tensor types (known ggml ids only),
//    n_dims in 1..4, shape products without overflow, row sizes divisible by the block size,
//    offsets aligned and data ranges inside the file and not overlapping, `general.alignment` a
//    uint32 power of two. Every failure is a calq::Error whose message names the file and the
//    key or tensor: kUnsupported for a version other than 2/3, an unknown or removed ggml type
//    id, or arrays nested too deep; kFormat for everything else.
//  * Metadata keeps file order and exact value types, so writing a file back (gguf_write_tensors
//    and gguf_write_options below) reproduces it byte for byte when it was laid out the way
//    llama.cpp lays files out (data in tensor-info order, each tensor padded to the alignment
//    with zero bytes).
//  * Metadata values keep their exact bytes: strings are not checked for UTF-8 (token strings in
//    real files are arbitrary bytes), bool values must be 0 or 1, arrays nest at most
//    kGgufMaxArrayDepth deep. Tensor names are at most kGgufMaxTensorName bytes (llama.cpp's
//    GGML_MAX_NAME - 1) and unique; keys are unique.
//  * A file with no tensors may end right after its tensor infos (gguf-py writes vocab-only files
//    that way); a file with tensors must contain the padding up to the data section.
//  * write_gguf() writes to a temporary file beside `path` and renames it into place. It streams:
//    the header (metadata and tensor infos) is assembled in memory, tensor data is written
//    straight from the callers' spans, so peak memory is the header size, not the file size.
//    Layout is llama.cpp's: header padded with zeros to the alignment, then each tensor in the
//    given order padded with zeros to the alignment; a file without tensors gets no padding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace calq::io {

enum class GgufValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

std::string_view gguf_value_type_name(GgufValueType type);
// Whether `id` is a GGUF metadata value type (0..12).
bool gguf_is_value_type(uint32_t id);
// Bytes one value of `type` occupies in a file at least: exactly, for the fixed-size scalars;
// the u64 length for a string; the u32 element type + u64 count for an array.
uint64_t gguf_value_min_bytes(GgufValueType type);

// One metadata value. Scalars use the field matching their type (unsigned ints and bool: `u`;
// signed ints: `i`; floats: `f`; string: `s`). Arrays set `array_type` and fill exactly one of
// the vectors by the same rule (`strings` for string arrays, `arrays` for arrays of arrays).
struct GgufValue {
  GgufValueType type = GgufValueType::kUint32;
  uint64_t u = 0;
  int64_t i = 0;
  double f = 0.0;  // float32 values widen exactly and narrow back exactly
  std::string s;

  GgufValueType array_type = GgufValueType::kUint8;
  std::vector<uint64_t> uints;
  std::vector<int64_t> ints;
  std::vector<double> floats;
  std::vector<std::string> strings;
  std::vector<GgufValue> arrays;

  size_t array_size() const;  // number of elements of an array value (0 for scalars)

  // Typed reads with conversion checks; `what` names the file and key in error messages.
  // as_int accepts any integer type (range-checked), as_float any float or integer type.
  int64_t as_int(std::string_view what) const;
  double as_float(std::string_view what) const;
  bool as_bool(std::string_view what) const;
  const std::string& as_string(std::string_view what) const;

  // Constructors for writers and tests.
  static GgufValue of_uint32(uint32_t v);
  static GgufValue of_int32(int32_t v);
  static GgufValue of_uint64(uint64_t v);
  static GgufValue of_float32(float v);
  static GgufValue of_bool(bool v);
  static GgufValue of_string(std::string v);
  static GgufValue of_strings(std::vector<std::string> v);
  static GgufValue of_float32s(std::vector<double> v);
  static GgufValue of_int32s(std::vector<int64_t> v);
};

using GgufMetadata = std::vector<std::pair<std::string, GgufValue>>;

// ggml tensor types as llama.cpp numbers them (the numbering is ABI).
struct GgmlTypeInfo {
  uint32_t id;
  std::string_view name;  // "F32", "F16", "Q4_0", "Q4_K", ...
  int64_t block_size;     // elements per block (1 for plain floats)
  int64_t type_size;      // bytes per block
};
const GgmlTypeInfo* ggml_type_info(uint32_t id);  // nullptr for unknown/removed ids
const GgmlTypeInfo* ggml_type_by_name(std::string_view name);  // "Q4_K"; nullptr if unknown
// The type's name for messages and listings: "Q4_K", or "type 99" for an id not in the table.
std::string ggml_type_name(uint32_t id);
inline constexpr uint32_t kGgmlF32 = 0;
inline constexpr uint32_t kGgmlF16 = 1;
inline constexpr uint32_t kGgmlBF16 = 30;

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> ne;  // ggml order: ne[0] is the contiguous (fastest) dimension
  uint32_t type = kGgmlF32;
  uint64_t offset = 0;      // relative to the start of the data section
  uint64_t size_bytes = 0;  // computed from ne and the type's block layout

  int64_t element_count() const;
};

// Limits the reader enforces and the writer respects.
inline constexpr size_t kGgufMaxTensorName = 63;
inline constexpr int kGgufMaxArrayDepth = 4;  // an array of arrays has depth 2
inline constexpr uint64_t kGgufDefaultAlignment = 32;

class GgufFile {
 public:
  static GgufFile open(const std::filesystem::path& path);
  // Parses a copy of `bytes` with the same validation as open(); `origin` stands for the path in
  // error messages and path(). For fuzzing and in-memory round trips.
  static GgufFile from_bytes(std::span<const std::byte> bytes, std::string origin);

  GgufFile(GgufFile&&) noexcept;
  GgufFile& operator=(GgufFile&&) noexcept;
  ~GgufFile();

  const std::filesystem::path& path() const;
  uint32_t version() const;
  uint64_t alignment() const;
  uint64_t data_offset() const;  // file offset of the data section

  const GgufMetadata& metadata() const;                // file order
  const GgufValue* find(std::string_view key) const;   // nullptr if absent
  const GgufValue& get(std::string_view key) const;    // kNotFound error naming file and key

  const std::vector<GgufTensorInfo>& tensors() const;  // file order
  const GgufTensorInfo* find_tensor(std::string_view name) const;
  std::span<const std::byte> tensor_data(const GgufTensorInfo& tensor) const;  // zero-copy view

  // Size of the whole file (or buffer) in bytes.
  uint64_t file_size() const;

  class Impl;

 private:
  explicit GgufFile(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// A tensor to write: its bytes are read, not copied, until write_gguf returns.
struct GgufWriteTensor {
  std::string name;
  std::vector<int64_t> ne;  // ggml order
  uint32_t type = kGgmlF32;
  std::span<const std::byte> data;  // exactly the size ne and type imply
};

struct GgufWriteOptions {
  uint32_t version = 3;
  // Alignment of the data section and of each tensor (a power of two); must equal
  // `general.alignment` (a uint32) when the metadata has that key, and any value other than 32
  // needs that key, since readers assume 32 without it. Else kInvalidArgument.
  uint64_t alignment = kGgufDefaultAlignment;
};

// Invalid input is kInvalidArgument naming the key or tensor: version not 2/3, duplicate keys or
// tensor names, array values whose filled vector does not match array_type, out-of-range integer
// values for their type, unknown tensor types, bad shapes, data size not what ne and type imply.
void write_gguf(const std::filesystem::path& path, const GgufMetadata& metadata,
                std::span<const GgufWriteTensor> tensors, const GgufWriteOptions& options = {});

// The same bytes write_gguf would write, in memory (tests, fuzzing, small files).
std::vector<std::byte> gguf_to_bytes(const GgufMetadata& metadata,
                                     std::span<const GgufWriteTensor> tensors,
                                     const GgufWriteOptions& options = {});

// Everything needed to write `file` back: its tensors as write requests viewing its data, and
// options with its version and alignment. write_gguf(p, f.metadata(), gguf_write_tensors(f),
// gguf_write_options(f)) reproduces a llama.cpp-laid-out file byte for byte.
std::vector<GgufWriteTensor> gguf_write_tensors(const GgufFile& file);
GgufWriteOptions gguf_write_options(const GgufFile& file);

}  // namespace calq::io
