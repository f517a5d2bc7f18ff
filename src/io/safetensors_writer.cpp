// safetensors writing: deterministic single files and Hugging Face style shards + index, from
// tensors given as bytes or produced one at a time while the file is written.
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <system_error>

#include "core/error.h"
#include "io/safetensors.h"

namespace calq::io {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;

constexpr std::string_view kMetadataKey = "__metadata__";

// One tensor as the writer sees it: its bytes given (`data`) or made on demand (`produce`).
struct Entry {
  const std::string* name = nullptr;
  DType dtype = DType::kF32;
  const Shape* shape = nullptr;
  uint64_t nbytes = 0;
  std::span<const std::byte> data;
  const std::function<void(std::span<std::byte>)>* produce = nullptr;
  const TensorToProduce* source = nullptr;  // for progress reports
};

// Bytes a tensor of `shape` and `dtype` occupies; a negative or overflowing shape is a caller bug.
uint64_t checked_nbytes(const std::string& name, DType dtype, const Shape& shape) {
  uint64_t numel = 1;
  for (int64_t d : shape) {
    if (d < 0) {
      fail(ErrorKind::kInvalidArgument, "write_safetensors: tensor '{}': negative dimension in {}", name,
           shape_string(shape));
    }
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel)) {
      fail(ErrorKind::kInvalidArgument, "write_safetensors: tensor '{}': shape {} overflows", name,
           shape_string(shape));
    }
  }
  uint64_t nbytes = 0;
  if (__builtin_mul_overflow(numel, dtype_size(dtype), &nbytes)) {
    fail(ErrorKind::kInvalidArgument, "write_safetensors: tensor '{}': shape {} × {} overflows", name,
         shape_string(shape), dtype_name(dtype));
  }
  return nbytes;
}

std::vector<Entry> entries_of(std::span<const TensorToWrite> tensors) {
  std::vector<Entry> out;
  out.reserve(tensors.size());
  for (const TensorToWrite& t : tensors) {
    const uint64_t nbytes = checked_nbytes(t.name, t.dtype, t.shape);
    if (nbytes != t.data.size()) {
      fail(ErrorKind::kInvalidArgument,
           "write_safetensors: tensor '{}': shape {} × {} needs {} bytes but data holds {} bytes", t.name,
           shape_string(t.shape), dtype_name(t.dtype), nbytes, t.data.size());
    }
    out.push_back({.name = &t.name, .dtype = t.dtype, .shape = &t.shape, .nbytes = nbytes, .data = t.data});
  }
  return out;
}

std::vector<Entry> entries_of(std::span<const TensorToProduce> tensors) {
  std::vector<Entry> out;
  out.reserve(tensors.size());
  for (const TensorToProduce& t : tensors) {
    if (!t.produce) fail(ErrorKind::kInvalidArgument, "write_safetensors: tensor '{}' has no producer", t.name);
    out.push_back({.name = &t.name,
                   .dtype = t.dtype,
                   .shape = &t.shape,
                   .nbytes = checked_nbytes(t.name, t.dtype, t.shape),
                   .produce = &t.produce,
                   .source = &t});
  }
  return out;
}

// The entries sorted by name (the on-disk order), after checking the names.
std::vector<const Entry*> sorted_checked(const std::vector<Entry>& entries) {
  std::vector<const Entry*> order;
  order.reserve(entries.size());
  for (const Entry& e : entries) {
    if (*e.name == kMetadataKey) {
      fail(ErrorKind::kInvalidArgument, "write_safetensors: tensor name '{}' is reserved", kMetadataKey);
    }
    order.push_back(&e);
  }
  std::sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) { return *a->name < *b->name; });
  const auto dup = std::adjacent_find(order.begin(), order.end(),
                                      [](const Entry* a, const Entry* b) { return *a->name == *b->name; });
  if (dup != order.end()) {
    fail(ErrorKind::kInvalidArgument, "write_safetensors: tensor '{}' given more than once", *(*dup)->name);
  }
  return order;
}

std::string dump_json(const ordered_json& j, int indent, const std::filesystem::path& path) {
  try {
    return j.dump(indent);
  } catch (const json::type_error& e) {  // invalid UTF-8 in a name or metadata string
    fail(ErrorKind::kInvalidArgument, "{}: cannot encode header: {}", path.string(), e.what());
  }
}

// The 8-byte length and the padded JSON header of a file of `order` (sorted by name).
std::string header_of(const std::vector<const Entry*>& order, const std::map<std::string, std::string>& metadata,
                      const std::filesystem::path& path) {
  // ordered_json keeps insertion order: __metadata__ first, then tensors by name, which matches
  // the order a std::map-backed reader (and the Python library) would print them in anyway.
  ordered_json header = ordered_json::object();
  if (!metadata.empty()) {
    ordered_json meta = ordered_json::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
    header[std::string(kMetadataKey)] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const Entry* e : order) {
    const uint64_t end = offset + e->nbytes;
    header[*e->name] = {{"dtype", dtype_name(e->dtype)}, {"shape", *e->shape}, {"data_offsets", {offset, end}}};
    offset = end;
  }
  std::string text = dump_json(header, -1, path);
  // Padding keeps the data section 8-byte aligned in the file (and so in the memory map), so
  // readers can use the tensors in place. Trailing spaces are valid JSON whitespace.
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  const uint64_t header_len = text.size();
  for (size_t i = 0; i < 8; ++i) out[i] = static_cast<char>((header_len >> (8 * i)) & 0xffu);
  return out + text;
}

// One buffer for the produced tensors of a write, as large as the largest of them (allocated
// uninitialized: pages are touched only as producers fill them).
class ProduceBuffer {
 public:
  explicit ProduceBuffer(const std::vector<Entry>& entries) {
    for (const Entry& e : entries) {
      if (e.produce != nullptr) size_ = std::max(size_, e.nbytes);
    }
    if (size_ > 0) data_.reset(new std::byte[size_]);
  }
  std::span<std::byte> get(uint64_t n) { return {data_.get(), static_cast<size_t>(n)}; }

 private:
  uint64_t size_ = 0;
  std::unique_ptr<std::byte[]> data_;
};

using OnEntry = std::function<void(const Entry&)>;

// Writes the file of `order` (validated, sorted by name): header first, then each tensor.
void write_sorted(const std::filesystem::path& path, const std::vector<const Entry*>& order,
                  const std::map<std::string, std::string>& metadata, ProduceBuffer& buffer,
                  const OnEntry& on_entry = {}) {
  const std::string header = header_of(order, metadata, path);
  write_file_atomic_stream(path, [&](const PutBytes& put) {
    put(std::as_bytes(std::span(header)));
    for (const Entry* e : order) {
      if (on_entry) on_entry(*e);
      if (e->produce == nullptr) {
        put(e->data);  // straight from the caller's span: no copy
        continue;
      }
      const std::span<std::byte> bytes = buffer.get(e->nbytes);
      (*e->produce)(bytes);
      put(bytes);
    }
  });
}

std::string shard_name(size_t k, size_t n) { return fmt::format("model-{:05}-of-{:05}.safetensors", k + 1, n); }

// Writes the shards (contiguous runs of `order`, already validated) and then the index; with one
// shard, model.safetensors and no index. Shards written are removed again on any error.
void write_shards(const std::filesystem::path& folder, const std::vector<std::vector<const Entry*>>& shards,
                  const std::map<std::string, std::string>& metadata, ProduceBuffer& buffer, const OnEntry& on_entry) {
  std::error_code ec;
  std::filesystem::create_directories(folder, ec);
  if (ec) fail(ErrorKind::kIo, "{}: cannot create folder: {}", folder.string(), ec.message());
  if (shards.size() == 1) {
    write_sorted(folder / "model.safetensors", shards[0], metadata, buffer, on_entry);
    return;
  }
  std::vector<std::filesystem::path> written;
  try {
    ordered_json weight_map = ordered_json::object();
    uint64_t total = 0;
    for (size_t k = 0; k < shards.size(); ++k) {
      const std::string name = shard_name(k, shards.size());
      write_sorted(folder / name, shards[k], metadata, buffer, on_entry);
      written.push_back(folder / name);
      for (const Entry* e : shards[k]) {
        weight_map[*e->name] = name;
        total += e->nbytes;
      }
    }
    // weight_map entries were added shard by shard, i.e. in name order already.
    ordered_json index = {{"metadata", {{"total_size", total}}}, {"weight_map", std::move(weight_map)}};
    const auto index_path = folder / "model.safetensors.index.json";
    const std::string text = dump_json(index, 2, index_path) + "\n";
    write_file_atomic(index_path, std::as_bytes(std::span(text)));
  } catch (...) {
    for (const auto& p : written) std::filesystem::remove(p, ec);
    throw;
  }
}

}  // namespace

void write_safetensors(const std::filesystem::path& path, std::span<const TensorToWrite> tensors,
                       const std::map<std::string, std::string>& metadata) {
  const std::vector<Entry> entries = entries_of(tensors);
  ProduceBuffer none(entries);
  write_sorted(path, sorted_checked(entries), metadata, none);
}

void write_safetensors_streamed(const std::filesystem::path& path, std::span<const TensorToProduce> tensors,
                                const std::map<std::string, std::string>& metadata) {
  const std::vector<Entry> entries = entries_of(tensors);
  const auto order = sorted_checked(entries);
  ProduceBuffer buffer(entries);
  write_sorted(path, order, metadata, buffer);
}

void write_sharded_safetensors(const std::filesystem::path& folder,
                               std::span<const TensorToWrite> tensors, size_t num_shards,
                               const std::map<std::string, std::string>& metadata) {
  if (num_shards == 0) {
    fail(ErrorKind::kInvalidArgument, "{}: num_shards must be at least 1", folder.string());
  }
  if (num_shards > 1 && num_shards > tensors.size()) {
    fail(ErrorKind::kInvalidArgument, "{}: cannot split {} tensors into {} shards", folder.string(),
         tensors.size(), num_shards);
  }
  const std::vector<Entry> entries = entries_of(tensors);
  const auto order = sorted_checked(entries);
  uint64_t total = 0;
  for (const Entry* e : order) total += e->nbytes;
  // Contiguous runs in name order; shard k closes once the running total reaches k+1 n-ths of the
  // bytes, or when every later shard needs one of the remaining tensors.
  std::vector<std::vector<const Entry*>> shards(num_shards);
  uint64_t running = 0;
  size_t shard = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    shards[shard].push_back(order[i]);
    running += order[i]->nbytes;
    const size_t shards_left = num_shards - shard - 1;
    const size_t tensors_left = order.size() - i - 1;
    // total * (shard + 1) / num_shards, arranged not to overflow.
    const uint64_t target =
        total / num_shards * (shard + 1) + total % num_shards * (shard + 1) / num_shards;
    if (shards_left > 0 && (tensors_left == shards_left || running >= target)) ++shard;
  }
  ProduceBuffer none(entries);
  write_shards(folder, shards, metadata, none, {});
}

void write_sharded_safetensors_streamed(const std::filesystem::path& folder,
                                        std::span<const TensorToProduce> tensors, uint64_t max_shard_bytes,
                                        const std::map<std::string, std::string>& metadata,
                                        const ShardProgress& progress) {
  if (max_shard_bytes == 0) fail(ErrorKind::kInvalidArgument, "{}: max_shard_bytes must be at least 1", folder.string());
  const std::vector<Entry> entries = entries_of(tensors);
  const auto order = sorted_checked(entries);
  // save_pretrained's rule, in name order.
  std::vector<std::vector<const Entry*>> shards(1);
  uint64_t in_shard = 0;
  for (const Entry* e : order) {
    const bool alone = e->nbytes > max_shard_bytes;
    if (!shards.back().empty() && (alone || in_shard + e->nbytes > max_shard_bytes)) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(e);
    in_shard += e->nbytes;
  }
  // The file each tensor goes into and its place in the write, for the progress reports.
  std::map<const Entry*, std::pair<size_t, std::string>> where;
  size_t index = 0;
  for (size_t k = 0; k < shards.size(); ++k) {
    const std::string file = shards.size() == 1 ? "model.safetensors" : shard_name(k, shards.size());
    for (const Entry* e : shards[k]) where[e] = {index++, file};
  }
  const OnEntry on_entry = [&](const Entry& e) {
    if (progress) progress(*e.source, where.at(&e).first, order.size(), where.at(&e).second);
  };
  ProduceBuffer buffer(entries);
  write_shards(folder, shards, metadata, buffer, on_entry);
}

}  // namespace calq::io
