// Reading LoRA adapters from a GGUF model file (gguf_lora.h).
#include "model/gguf_lora.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cassert>
#include <cmath>
#include <utility>

#include "core/error.h"
#include "model/architecture.h"
#include "model/gguf_model.h"
#include "model/loader_util.h"

namespace calq::model {
namespace {

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() > suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string ne_text(const std::vector<int64_t>& ne) { return fmt::format("{{{}}}", fmt::join(ne, ", ")); }

}  // namespace

bool is_lora_tensor_name(std::string_view name) {
  return ends_with(name, kLoraASuffix) || ends_with(name, kLoraBSuffix);
}

std::string lora_tensor_name(std::string_view base, char factor) {
  assert(factor == 'a' || factor == 'b');
  return fmt::format("{}{}", base, factor == 'a' ? kLoraASuffix : kLoraBSuffix);
}

std::optional<double> model_lora_alpha(const Model& m, std::string_view origin) {
  std::optional<double> alpha;
  for (size_t l = 0; l < m.layers.size(); ++l) {
    for (const TensorRole role : kLayerLinearRoles) {
      const LoraAdapter* a = m.layers[l].adapter(role);
      if (a == nullptr) continue;
      if (alpha && *alpha != a->alpha()) {
        fail(ErrorKind::kUnsupported,
             "{}: the adapters have different alphas ({} and {} at layer {} {}); the GGUF key {} holds one", origin,
             *alpha, a->alpha(), l, role_name(role), kCalqLoraAlphaKey);
      }
      alpha = a->alpha();
    }
  }
  return alpha;
}

void read_gguf_adapters(const io::GgufFile& file, Model& m,
                        const std::function<int64_t(TensorRole, std::string_view)>& heads_of, ThreadPool& pool) {
  const std::string origin = file.path().string();
  std::optional<double> alpha;
  if (const io::GgufValue* v = file.find(kCalqLoraAlphaKey)) {
    if (v->type != io::GgufValueType::kFloat32 && v->type != io::GgufValueType::kFloat64) {
      fail(ErrorKind::kFormat, "{}: key '{}' must be a float32", origin, kCalqLoraAlphaKey);
    }
    if (!std::isfinite(v->f) || v->f <= 0) {
      fail(ErrorKind::kFormat, "{}: key '{}' = {} must be finite and > 0", origin, kCalqLoraAlphaKey, v->f);
    }
    alpha = v->f;
  }
  bool any = false;
  for (const io::GgufTensorInfo& info : file.tensors()) {
    if (!is_lora_tensor_name(info.name)) continue;
    any = true;
    const bool is_a = ends_with(info.name, kLoraASuffix);
    const std::string_view base = std::string_view(info.name).substr(0, info.name.size() - kLoraASuffix.size());
    const std::optional<RoleAndLayer> parsed = parse_gguf_tensor_name(*m.arch, base);
    const bool linear = parsed && parsed->layer >= 0 && parsed->layer < m.config.num_layers &&
                        std::find(std::begin(kLayerLinearRoles), std::end(kLayerLinearRoles), parsed->role) !=
                            std::end(kLayerLinearRoles);
    if (!linear || file.find_tensor(base) == nullptr) {
      fail(ErrorKind::kFormat, "{}: tensor '{}' is an adapter of '{}', which is not a layer linear weight of this file",
           origin, info.name, base);
    }
    const std::string partner = lora_tensor_name(base, is_a ? 'b' : 'a');
    const io::GgufTensorInfo* other = file.find_tensor(partner);
    if (other == nullptr) fail(ErrorKind::kFormat, "{}: tensor '{}' without its partner '{}'", origin, info.name, partner);
    if (!is_a) continue;  // read with its A
    if (!alpha) fail(ErrorKind::kFormat, "{}: tensor '{}' but no key '{}'", origin, info.name, kCalqLoraAlphaKey);
    const io::GgufTensorInfo& b_info = *other;
    LayerWeights& layer = m.layers[static_cast<size_t>(parsed->layer)];
    const int64_t in = layer.linear(parsed->role).cols(), out = layer.linear(parsed->role).rows();
    for (const io::GgufTensorInfo* t : {&info, &b_info}) {
      if (t->type != io::kGgmlF32 || t->ne.size() != 2) {
        fail(ErrorKind::kFormat, "{}: tensor '{}' must be a 2-D F32 tensor (it is {} with ne {})", origin, t->name,
             io::ggml_type_name(t->type), ne_text(t->ne));
      }
    }
    const int64_t rank = info.ne[1];
    if (info.ne[0] != in || rank < 1) {
      fail(ErrorKind::kFormat, "{}: tensor '{}' has ne {}; its base '{}' takes {} inputs, so it must be {{{}, rank}}",
           origin, info.name, ne_text(info.ne), base, in, in);
    }
    if (b_info.ne[0] != rank || b_info.ne[1] != out) {
      fail(ErrorKind::kFormat, "{}: tensor '{}' has ne {}; with '{}' of rank {} and its base's {} outputs it must be "
           "{{{}, {}}}", origin, b_info.name, ne_text(b_info.ne), info.name, rank, out, rank, out);
    }
    Tensor a = widen_checked(DType::kF32, file.tensor_data(info).data(), Shape{rank, in}, pool, origin, info.name);
    Tensor b = widen_checked(DType::kF32, file.tensor_data(b_info).data(), Shape{out, rank}, pool, origin, b_info.name);
    if (const int64_t heads = heads_of(parsed->role, base)) {
      Tensor unpermuted = Tensor::zeros(DType::kF32, {out, rank});
      unpermute_qk_rows(b.f32(), unpermuted.mutable_f32(), heads, m.config.head_dim, rank);
      b = std::move(unpermuted);
    }
    std::optional<LoraAdapter>& slot = layer.adapter_slot(parsed->role);
    assert(!slot && "tensor names are unique in a GGUF file");
    slot = LoraAdapter::make(std::move(a), std::move(b), *alpha, in, out,
                             fmt::format("{}: tensor '{}'", origin, info.name));
  }
  if (alpha && !any) {
    fail(ErrorKind::kFormat, "{}: key '{}' without any adapter tensor (<weight>{}, <weight>{})", origin,
         kCalqLoraAlphaKey, kLoraASuffix, kLoraBSuffix);
  }
}

}  // namespace calq::model
