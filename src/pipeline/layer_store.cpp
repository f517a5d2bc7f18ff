#include "pipeline/layer_store.h"

#include <fmt/format.h>

#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/mapped_file.h"
#include "io/safetensors.h"

namespace calq::pipeline {
namespace {

// A layer's weights by stored name, in a fixed order (roles, then experts).
template <typename Fn>
void for_each_weight(model::LayerWeights& w, Fn&& fn) {
  for (const model::TensorRole role : model::kLayerLinearRoles) fn(std::string(model::role_name(role)), w.linear(role));
  fn("router", w.router);
  fn("shared_expert_gate", w.shared_expert_gate);
  for (size_t e = 0; e < w.experts.size(); ++e) {
    for (const model::TensorRole role :
         {model::TensorRole::kExpertGate, model::TensorRole::kExpertUp, model::TensorRole::kExpertDown}) {
      fn(fmt::format("expert.{}.{}", e, model::role_name(role)), w.experts[e].linear(role));
    }
  }
}

}  // namespace

LayerStore::LayerStore(std::filesystem::path dir) : dir_(std::move(dir)) {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) fail(ErrorKind::kIo, "{}: cannot create the layer store folder: {}", dir_.string(), ec.message());
}

std::filesystem::path LayerStore::file(int64_t layer) const {
  return dir_ / fmt::format("layer-{:05}.safetensors", layer);
}

void LayerStore::store(int64_t layer, model::LayerWeights& w) const {
  std::vector<io::TensorToWrite> tensors;
  std::map<std::string, std::string> metadata{{"calq.layer", std::to_string(layer)}};
  for_each_weight(w, [&](const std::string& name, model::LinearWeight& lw) {
    if (!lw.is_quantized()) return;
    const QuantizedTensor& q = lw.quantized();
    tensors.push_back({.name = name, .dtype = DType::kU8, .shape = {static_cast<int64_t>(q.bytes.size())},
                       .data = q.bytes});
    metadata[name + ".format"] = std::string(q.format->name());
    metadata[name + ".shape"] = fmt::format("{},{}", q.rows, q.cols);
  });
  if (tensors.empty()) return;
  const std::filesystem::path path = file(layer);
  io::write_safetensors(path, tensors, metadata);
  const auto f = std::make_shared<const io::SafetensorsFile>(io::SafetensorsFile::open(path, {.quantized = true}));
  for_each_weight(w, [&](const std::string& name, model::LinearWeight& lw) {
    if (!lw.is_quantized()) return;
    const std::span<const std::byte> bytes = f->tensor(name).bytes();
    lw.rebind_bytes(bytes, f);
    release_mapped_pages(bytes);
  });
}

}  // namespace calq::pipeline
