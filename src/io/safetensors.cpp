// safetensors reading: header validation, zero-copy tensor views, and HF model folders.
// (Writing lives in safetensors_writer.cpp.)
#include "io/safetensors.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <system_error>
#include <utility>

#include "core/error.h"

namespace calq::io {
namespace {

using nlohmann::json;

// A real header is a few hundred bytes per tensor; anything this large is corrupt or hostile, and
// refusing it keeps a bogus length from making us parse (and allocate for) gigabytes of JSON.
constexpr uint64_t kMaxHeaderBytes = 100ull * 1000 * 1000;
constexpr std::string_view kMetadataKey = "__metadata__";
constexpr std::string_view kIndexFile = "model.safetensors.index.json";
constexpr std::string_view kSingleFile = "model.safetensors";

// Every dtype the safetensors format defines, so a file using one we do not load gets "not
// supported" rather than "unknown" (which would suggest the file is corrupt).
constexpr std::array<std::string_view, 20> kKnownDTypes = {
    "BOOL", "U8",  "I8",  "F8_E5M2", "F8_E4M3", "F8_E8M0", "I16", "U16",     "F16",     "BF16",
    "I32",  "U32", "F32", "F64",     "I64",     "U64",     "F4",  "F6_E2M3", "F6_E3M2", "C64"};

// Model weights are floats; integer tensors would need a different consumer, so open() accepts
// exactly these and rejects everything else up front rather than at first use.
std::optional<DType> loadable_dtype(std::string_view name, bool quantized) {
  if (name == "F32") return DType::kF32;
  if (name == "F16") return DType::kF16;
  if (name == "BF16") return DType::kBF16;
  if (quantized) {
    for (const DType d : {DType::kI32, DType::kI64, DType::kU8, DType::kF8E4M3}) {
      if (name == dtype_name(d)) return d;
    }
  }
  return std::nullopt;
}

std::string json_type(const json& j) { return j.type_name(); }

// Parses the header JSON, reporting the first top-level key seen twice (nlohmann would silently
// keep the last one, so two entries could disagree without anyone noticing).
json parse_header(const std::string& file, const char* first, const char* last) {
  std::set<std::string, std::less<>> seen;
  std::string duplicate;
  json header;
  try {
    header = json::parse(first, last, [&](int depth, json::parse_event_t event, json& parsed) {
      if (depth == 1 && event == json::parse_event_t::key && duplicate.empty()) {
        const auto& key = parsed.get_ref<const std::string&>();
        if (!seen.insert(key).second) duplicate = key;
      }
      return true;
    });
  } catch (const json::exception& e) {  // parse_error, and out_of_range for numbers like 1e999
    fail(ErrorKind::kFormat, "{}: header is not valid JSON: {}", file, e.what());
  }
  if (!header.is_object()) {
    fail(ErrorKind::kFormat, "{}: header must be a JSON object, got {}", file, json_type(header));
  }
  if (!duplicate.empty()) {
    fail(ErrorKind::kFormat, "{}: key '{}' appears more than once in the header", file, duplicate);
  }
  return header;
}

std::map<std::string, std::string> parse_metadata(const std::string& file, const json& meta) {
  if (!meta.is_object()) {
    fail(ErrorKind::kFormat, "{}: key '{}': expected an object of strings, got {}", file,
         kMetadataKey, json_type(meta));
  }
  std::map<std::string, std::string> out;
  for (const auto& [key, value] : meta.items()) {
    if (!value.is_string()) {
      fail(ErrorKind::kFormat, "{}: key '{}': entry '{}' must be a string, got {}", file,
           kMetadataKey, key, json_type(value));
    }
    out.emplace(key, value.get<std::string>());
  }
  return out;
}

const json& require_key(const std::string& file, const std::string& name, const json& entry,
                        const char* key) {
  const auto it = entry.find(key);
  if (it == entry.end()) {
    fail(ErrorKind::kFormat, "{}: tensor '{}': missing key '{}'", file, name, key);
  }
  return *it;
}

DType parse_dtype(const std::string& file, const std::string& name, const json& entry, bool quantized) {
  const json& j = require_key(file, name, entry, "dtype");
  if (!j.is_string()) {
    fail(ErrorKind::kFormat, "{}: tensor '{}': key 'dtype' must be a string, got {}", file, name,
         json_type(j));
  }
  const auto& text = j.get_ref<const std::string&>();
  if (auto dtype = loadable_dtype(text, quantized)) return *dtype;
  if (std::find(kKnownDTypes.begin(), kKnownDTypes.end(), text) != kKnownDTypes.end()) {
    fail(ErrorKind::kUnsupported,
         "{}: tensor '{}': dtype {} is not supported (calq reads F32, F16, BF16{})", file, name, text,
         quantized ? ", and I32, I64, U8, F8_E4M3 in quantized checkpoints" : "");
  }
  fail(ErrorKind::kUnsupported, "{}: tensor '{}': unknown dtype '{}'", file, name, text);
}

Shape parse_shape(const std::string& file, const std::string& name, const json& entry) {
  const json& j = require_key(file, name, entry, "shape");
  if (!j.is_array()) {
    fail(ErrorKind::kFormat, "{}: tensor '{}': key 'shape' must be an array, got {}", file, name,
         json_type(j));
  }
  Shape shape;
  shape.reserve(j.size());
  int64_t numel = 1;
  for (const json& d : j) {
    if (!d.is_number_integer()) {
      fail(ErrorKind::kFormat, "{}: tensor '{}': key 'shape' must hold integers, got {}", file,
           name, d.dump());
    }
    if (d.is_number_unsigned()) {
      const auto u = d.get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        fail(ErrorKind::kFormat, "{}: tensor '{}': key 'shape': dimension {} is too large", file,
             name, u);
      }
      shape.push_back(static_cast<int64_t>(u));
    } else {
      const auto v = d.get<int64_t>();
      if (v < 0) {
        fail(ErrorKind::kFormat, "{}: tensor '{}': key 'shape': negative dimension {}", file, name,
             v);
      }
      shape.push_back(v);
    }
    // Guard every partial product (not just the final one): shape_numel() multiplies in the same
    // order in int64, so this keeps it free of overflow even when a later dimension is 0.
    if (__builtin_mul_overflow(numel, shape.back(), &numel)) {
      fail(ErrorKind::kFormat, "{}: tensor '{}': key 'shape': element count of {} overflows", file,
           name, j.dump());
    }
  }
  return shape;
}

std::pair<uint64_t, uint64_t> parse_offsets(const std::string& file, const std::string& name,
                                            const json& entry) {
  const json& j = require_key(file, name, entry, "data_offsets");
  if (!j.is_array() || j.size() != 2) {
    fail(ErrorKind::kFormat, "{}: tensor '{}': key 'data_offsets' must be [begin, end], got {}",
         file, name, j.dump());
  }
  for (const json& v : j) {
    // nlohmann stores every non-negative integer literal as unsigned.
    if (!v.is_number_unsigned()) {
      fail(ErrorKind::kFormat,
           "{}: tensor '{}': key 'data_offsets' must hold non-negative integers, got {}", file,
           name, v.dump());
    }
  }
  return {j[0].get<uint64_t>(), j[1].get<uint64_t>()};
}

TensorInfo parse_tensor(const std::string& file, const std::string& name, const json& entry,
                        uint64_t data_size, bool quantized) {
  if (!entry.is_object()) {
    fail(ErrorKind::kFormat, "{}: tensor '{}': entry must be an object, got {}", file, name,
         json_type(entry));
  }
  TensorInfo info;
  info.name = name;
  info.dtype = parse_dtype(file, name, entry, quantized);
  info.shape = parse_shape(file, name, entry);
  std::tie(info.begin, info.end) = parse_offsets(file, name, entry);
  if (info.begin > info.end) {
    fail(ErrorKind::kFormat, "{}: tensor '{}': data_offsets [{}, {}) have begin > end", file, name,
         info.begin, info.end);
  }
  if (info.end > data_size) {
    fail(ErrorKind::kFormat,
         "{}: tensor '{}': data_offsets [{}, {}) out of bounds: the data section is {} bytes "
         "(file truncated?)",
         file, name, info.begin, info.end, data_size);
  }
  uint64_t nbytes = 0;
  const auto numel = static_cast<uint64_t>(shape_numel(info.shape));
  if (__builtin_mul_overflow(numel, dtype_size(info.dtype), &nbytes)) {
    fail(ErrorKind::kFormat, "{}: tensor '{}': shape {} × {} overflows a 64-bit byte count", file,
         name, shape_string(info.shape), dtype_name(info.dtype));
  }
  if (nbytes != info.end - info.begin) {
    fail(ErrorKind::kFormat, "{}: tensor '{}': shape {} × {} = {} bytes but data_offsets span {}",
         file, name, shape_string(info.shape), dtype_name(info.dtype), nbytes,
         info.end - info.begin);
  }
  return info;
}

// Overlapping tensors would alias each other's bytes; empty tensors occupy nothing and are skipped.
void check_overlaps(const std::string& file, const std::vector<TensorInfo>& tensors) {
  std::vector<const TensorInfo*> by_offset;
  for (const auto& t : tensors) {
    if (t.begin != t.end) by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->begin < b->begin; });
  // Sorted by begin, any overlap shows up between neighbours: the tensor with the furthest end so
  // far is the one a later begin can collide with.
  const TensorInfo* furthest = nullptr;
  for (const TensorInfo* t : by_offset) {
    if (furthest != nullptr && t->begin < furthest->end) {
      fail(ErrorKind::kFormat, "{}: tensors '{}' [{}, {}) and '{}' [{}, {}) overlap", file,
           furthest->name, furthest->begin, furthest->end, t->name, t->begin, t->end);
    }
    if (furthest == nullptr || t->end > furthest->end) furthest = t;
  }
}

bool is_safe_shard_name(std::string_view name) {
  return !name.empty() && name != "." && name.find('/') == std::string_view::npos &&
         name.find('\\') == std::string_view::npos && name.find("..") == std::string_view::npos &&
         name.find('\0') == std::string_view::npos;
}

bool exists_no_throw(const std::filesystem::path& path) {
  std::error_code ec;
  return std::filesystem::exists(path, ec);
}

}  // namespace

SafetensorsFile SafetensorsFile::open(const std::filesystem::path& path, const SafetensorsOpenOptions& options) {
  SafetensorsFile out;
  out.file_ = MappedFile::open(path);
  const std::string file = path.string();
  const auto bytes = out.file_->bytes();
  if (bytes.size() < 8) {
    fail(ErrorKind::kFormat, "{}: truncated: {} bytes, but the header length alone needs 8", file,
         bytes.size());
  }
  uint64_t header_len = 0;
  std::array<unsigned char, 8> raw{};
  std::memcpy(raw.data(), bytes.data(), 8);
  for (size_t i = 0; i < 8; ++i) header_len |= static_cast<uint64_t>(raw[i]) << (8 * i);
  if (header_len > bytes.size() - 8) {
    fail(ErrorKind::kFormat, "{}: header length {} exceeds file size {}", file, header_len,
         bytes.size());
  }
  if (header_len > kMaxHeaderBytes) {
    fail(ErrorKind::kFormat, "{}: header length {} exceeds the {} byte limit", file, header_len,
         kMaxHeaderBytes);
  }
  out.data_start_ = 8 + header_len;
  const uint64_t data_size = bytes.size() - out.data_start_;

  const auto* header_begin = reinterpret_cast<const char*>(bytes.data() + 8);
  const json header = parse_header(file, header_begin, header_begin + header_len);
  // nlohmann objects iterate in sorted key order, which gives tensors_ its documented order.
  for (const auto& [name, entry] : header.items()) {
    if (name == kMetadataKey) {
      out.metadata_ = parse_metadata(file, entry);
    } else {
      out.tensors_.push_back(parse_tensor(file, name, entry, data_size, options.quantized));
    }
  }
  check_overlaps(file, out.tensors_);
  return out;
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  const auto it = std::lower_bound(
      tensors_.begin(), tensors_.end(), name,
      [](const TensorInfo& t, std::string_view n) { return std::string_view(t.name) < n; });
  return it != tensors_.end() && it->name == name ? &*it : nullptr;
}

Tensor SafetensorsFile::tensor(std::string_view name) const {
  const TensorInfo* info = find(name);
  if (info == nullptr)
    fail(ErrorKind::kNotFound, "{}: tensor '{}' not found", path().string(), name);
  const std::byte* data = file_->bytes().data() + data_start_ + info->begin;
  return Tensor::view(info->dtype, info->shape, data, file_);
}

SafetensorsModel SafetensorsModel::open_folder(const std::filesystem::path& folder,
                                               const SafetensorsOpenOptions& options) {
  SafetensorsModel model;
  model.folder_ = folder;
  const auto index_path = folder / kIndexFile;
  if (!exists_no_throw(index_path)) {
    const auto single = folder / kSingleFile;
    if (!exists_no_throw(single)) {
      fail(ErrorKind::kNotFound, "{}: no {} or {} found", folder.string(), kSingleFile, kIndexFile);
    }
    model.files_.push_back(SafetensorsFile::open(single, options));
    for (const auto& t : model.files_.front().tensors()) model.index_.emplace(t.name, 0);
    return model;
  }

  const std::string index_file = index_path.string();
  json index;
  try {
    index = json::parse(read_text_file(index_path));
  } catch (const json::exception& e) {  // parse_error, and out_of_range for numbers like 1e999
    fail(ErrorKind::kFormat, "{}: not valid JSON: {}", index_file, e.what());
  }
  if (!index.is_object()) {
    fail(ErrorKind::kFormat, "{}: must be a JSON object, got {}", index_file, json_type(index));
  }
  const auto map_it = index.find("weight_map");
  if (map_it == index.end()) fail(ErrorKind::kFormat, "{}: missing key 'weight_map'", index_file);
  if (!map_it->is_object() || map_it->empty()) {
    fail(ErrorKind::kFormat, "{}: key 'weight_map' must be a non-empty object, got {}", index_file,
         map_it->dump().substr(0, 80));
  }

  std::map<std::string, size_t> shard_position;  // shard file name -> files_ index
  for (const auto& [name, shard] : map_it->items()) {
    if (!shard.is_string()) {
      fail(ErrorKind::kFormat, "{}: key 'weight_map': tensor '{}' must map to a file name, got {}",
           index_file, name, json_type(shard));
    }
    const auto& shard_name = shard.get_ref<const std::string&>();
    // The index is input like any other; a name with a path in it could reach outside the folder.
    if (!is_safe_shard_name(shard_name)) {
      fail(ErrorKind::kFormat,
           "{}: key 'weight_map': tensor '{}' maps to '{}', which is not a plain file name",
           index_file, name, shard_name);
    }
    auto [it, inserted] = shard_position.emplace(shard_name, model.files_.size());
    if (inserted) {
      const auto shard_path = folder / shard_name;
      if (!exists_no_throw(shard_path)) {
        fail(ErrorKind::kNotFound, "{}: shard '{}' (holding tensor '{}') not found: {}", index_file,
             shard_name, name, shard_path.string());
      }
      model.files_.push_back(SafetensorsFile::open(shard_path, options));
    }
    const SafetensorsFile& file = model.files_[it->second];
    if (file.find(name) == nullptr) {
      fail(ErrorKind::kNotFound, "{}: tensor '{}' listed in {} not found in this shard",
           file.path().string(), name, kIndexFile);
    }
    model.index_.emplace(name, it->second);
  }
  return model;
}

std::vector<std::string> SafetensorsModel::names() const {
  std::vector<std::string> out;
  out.reserve(index_.size());
  for (const auto& [name, pos] : index_) out.push_back(name);
  return out;
}

bool SafetensorsModel::contains(std::string_view name) const {
  return index_.find(name) != index_.end();
}

const TensorInfo& SafetensorsModel::info(std::string_view name) const {
  const auto it = index_.find(name);
  if (it == index_.end())
    fail(ErrorKind::kNotFound, "{}: tensor '{}' not found", folder_.string(), name);
  return *files_[it->second].find(name);
}

Tensor SafetensorsModel::tensor(std::string_view name) const {
  const auto it = index_.find(name);
  if (it == index_.end())
    fail(ErrorKind::kNotFound, "{}: tensor '{}' not found", folder_.string(), name);
  return files_[it->second].tensor(name);
}

}  // namespace calq::io
