// safetensors writing: deterministic single files and Hugging Face style shards + index.
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <nlohmann/json.hpp>
#include <system_error>

#include "core/error.h"
#include "io/safetensors.h"

namespace calq::io {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;

constexpr std::string_view kMetadataKey = "__metadata__";

// Bytes `t` occupies, after checking that its shape and data agree (a caller bug otherwise).
uint64_t checked_nbytes(const TensorToWrite& t) {
  uint64_t numel = 1;
  for (int64_t d : t.shape) {
    if (d < 0) {
      fail(ErrorKind::kInvalidArgument, "write_safetensors: tensor '{}': negative dimension in {}",
           t.name, shape_string(t.shape));
    }
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel)) {
      fail(ErrorKind::kInvalidArgument, "write_safetensors: tensor '{}': shape {} overflows",
           t.name, shape_string(t.shape));
    }
  }
  uint64_t nbytes = 0;
  if (__builtin_mul_overflow(numel, dtype_size(t.dtype), &nbytes) || nbytes != t.data.size()) {
    fail(ErrorKind::kInvalidArgument,
         "write_safetensors: tensor '{}': shape {} × {} needs {} elements but data holds {} bytes",
         t.name, shape_string(t.shape), dtype_name(t.dtype), numel, t.data.size());
  }
  return nbytes;
}

// The tensors sorted by name (the on-disk order), after validating names and sizes.
std::vector<const TensorToWrite*> sorted_checked(std::span<const TensorToWrite> tensors) {
  std::vector<const TensorToWrite*> order;
  order.reserve(tensors.size());
  for (const auto& t : tensors) {
    if (t.name == kMetadataKey) {
      fail(ErrorKind::kInvalidArgument, "write_safetensors: tensor name '{}' is reserved",
           kMetadataKey);
    }
    checked_nbytes(t);
    order.push_back(&t);
  }
  std::sort(order.begin(), order.end(),
            [](const TensorToWrite* a, const TensorToWrite* b) { return a->name < b->name; });
  const auto dup = std::adjacent_find(
      order.begin(), order.end(),
      [](const TensorToWrite* a, const TensorToWrite* b) { return a->name == b->name; });
  if (dup != order.end()) {
    fail(ErrorKind::kInvalidArgument, "write_safetensors: tensor '{}' given more than once",
         (*dup)->name);
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

// `order` must already be validated and sorted by name.
void write_sorted(const std::filesystem::path& path, const std::vector<const TensorToWrite*>& order,
                  const std::map<std::string, std::string>& metadata) {
  // ordered_json keeps insertion order: __metadata__ first, then tensors by name, which matches
  // the order a std::map-backed reader (and the Python library) would print them in anyway.
  ordered_json header = ordered_json::object();
  if (!metadata.empty()) {
    ordered_json meta = ordered_json::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
    header[std::string(kMetadataKey)] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const TensorToWrite* t : order) {
    const uint64_t end = offset + t->data.size();
    header[t->name] = {
        {"dtype", dtype_name(t->dtype)}, {"shape", t->shape}, {"data_offsets", {offset, end}}};
    offset = end;
  }
  std::string text = dump_json(header, -1, path);
  // Padding keeps the data section 8-byte aligned in the file (and so in the memory map), so
  // readers can use the tensors in place. Trailing spaces are valid JSON whitespace.
  text.append((8 - text.size() % 8) % 8, ' ');

  // Written straight from the tensors' spans (no copy of the file in memory).
  std::array<std::byte, 8> length{};
  const uint64_t header_len = text.size();
  for (size_t i = 0; i < 8; ++i) length[i] = static_cast<std::byte>((header_len >> (8 * i)) & 0xffu);
  std::vector<std::span<const std::byte>> parts = {length, std::as_bytes(std::span(text))};
  for (const TensorToWrite* t : order) parts.push_back(t->data);
  write_file_atomic_parts(path, parts);
}

}  // namespace

void write_safetensors(const std::filesystem::path& path, std::span<const TensorToWrite> tensors,
                       const std::map<std::string, std::string>& metadata) {
  write_sorted(path, sorted_checked(tensors), metadata);
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
  const auto order = sorted_checked(tensors);
  std::error_code ec;
  std::filesystem::create_directories(folder, ec);
  if (ec) fail(ErrorKind::kIo, "{}: cannot create folder: {}", folder.string(), ec.message());
  if (num_shards == 1) {
    write_sorted(folder / "model.safetensors", order, metadata);
    return;
  }

  uint64_t total = 0;
  for (const TensorToWrite* t : order) total += t->data.size();
  // Contiguous runs in name order; shard k closes once the running total reaches k+1 n-ths of the
  // bytes, or when every later shard needs one of the remaining tensors.
  std::vector<std::vector<const TensorToWrite*>> shards(num_shards);
  uint64_t running = 0;
  size_t shard = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    shards[shard].push_back(order[i]);
    running += order[i]->data.size();
    const size_t shards_left = num_shards - shard - 1;
    const size_t tensors_left = order.size() - i - 1;
    // total * (shard + 1) / num_shards, arranged not to overflow.
    const uint64_t target =
        total / num_shards * (shard + 1) + total % num_shards * (shard + 1) / num_shards;
    if (shards_left > 0 && (tensors_left == shards_left || running >= target)) ++shard;
  }

  ordered_json weight_map = ordered_json::object();
  for (size_t k = 0; k < num_shards; ++k) {
    const std::string name = fmt::format("model-{:05}-of-{:05}.safetensors", k + 1, num_shards);
    write_sorted(folder / name, shards[k], metadata);
    for (const TensorToWrite* t : shards[k]) weight_map[t->name] = name;
  }
  // weight_map entries were added shard by shard, i.e. in name order already.
  ordered_json index = {{"metadata", {{"total_size", total}}},
                        {"weight_map", std::move(weight_map)}};
  const auto index_path = folder / "model.safetensors.index.json";
  const std::string text = dump_json(index, 2, index_path) + "\n";
  write_file_atomic(index_path, std::as_bytes(std::span(text)));
}

}  // namespace calq::io
