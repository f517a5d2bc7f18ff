// llama.cpp loader rules as findings (see gguf_check.h).
#include "io/gguf_check.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <array>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace calq::io {
namespace {

// A LoRA adapter factor ("<weight>.lora_a" / ".lora_b", as model/gguf_lora.h writes them).
bool is_lora_factor(std::string_view name) {
  for (const std::string_view suffix : {std::string_view(".lora_a"), std::string_view(".lora_b")}) {
    if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
      return true;
  }
  return false;
}

constexpr std::array<std::string_view, 5> kArchitectures = {"llama", "qwen2", "qwen3", "qwen2moe", "qwen3moe"};
// tokenizer.ggml.model values llama.cpp's vocabulary loader knows.
constexpr std::array<std::string_view, 8> kTokenizerModels = {"no_vocab", "none", "llama", "gpt2",
                                                              "bert",     "t5",   "rwkv",  "plamo2"};

class Checker {
 public:
  Checker(const GgufFile& file, GgufCheckReport& report) : f_(file), r_(report) {}

  void run() {
    check_container();
    check_calq();
    const GgufValue* arch_v = f_.find("general.architecture");
    if (arch_v == nullptr) {
      error("general.architecture", "missing: llama.cpp needs it to pick the model loader");
    } else if (arch_v->type != GgufValueType::kString) {
      error("general.architecture", fmt::format("is {}, not a string", gguf_value_type_name(arch_v->type)));
    } else if (std::find(kArchitectures.begin(), kArchitectures.end(), arch_v->s) == kArchitectures.end()) {
      error("general.architecture",
            fmt::format("'{}' is not one of the architectures this check knows (llama, qwen2, qwen3, qwen2moe, "
                        "qwen3moe)", arch_v->s));
    } else {
      arch_ = arch_v->s;
    }
    check_tokenizer();
    if (!arch_.empty()) {
      check_hparams();
      check_tensors();
    }
  }

 private:
  void error(std::string where, std::string message) {
    r_.findings.push_back({GgufFindingLevel::kError, std::move(where), std::move(message)});
  }
  void warn(std::string where, std::string message) {
    r_.findings.push_back({GgufFindingLevel::kWarning, std::move(where), std::move(message)});
  }
  std::string key(std::string_view suffix) const { return fmt::format("{}.{}", arch_, suffix); }

  // GgufFile::open enforced these already; kept explicit as the rules llama.cpp's reader applies.
  void check_container() {
    if (f_.version() < 2) error("", fmt::format("GGUF version {} (llama.cpp reads 2 and 3)", f_.version()));
    for (const GgufTensorInfo& t : f_.tensors()) {
      const GgmlTypeInfo* info = ggml_type_info(t.type);
      if (info == nullptr) {
        error(t.name, fmt::format("ggml type id {} is unknown to llama.cpp", t.type));
        continue;
      }
      if (t.ne.empty() || t.ne[0] % info->block_size != 0) {
        error(t.name, fmt::format("row of {} elements is not a multiple of the {} block size {}",
                                  t.ne.empty() ? 0 : t.ne[0], info->name, info->block_size));
      }
      if (t.offset % f_.alignment() != 0) {
        error(t.name, fmt::format("data offset {} is not a multiple of the alignment {}", t.offset, f_.alignment()));
      }
      if (f_.data_offset() + t.offset + t.size_bytes > f_.file_size()) {
        error(t.name, fmt::format("data [{}, {}) ends past the end of the file ({} bytes)", f_.data_offset() + t.offset,
                                  f_.data_offset() + t.offset + t.size_bytes, f_.file_size()));
      }
    }
  }

  void check_calq() {
    constexpr std::string_view kPrefix = "calq.qtensor.";
    constexpr std::string_view kFormatSuffix = ".format";
    bool requires_calq = false;
    if (const GgufValue* v = f_.find("calq.requires_calq"); v != nullptr && v->type == GgufValueType::kBool && v->u) {
      requires_calq = true;
    }
    std::vector<std::pair<std::string, std::string>> tensors;  // name, format
    for (const auto& [k, v] : f_.metadata()) {
      if (k.rfind(kPrefix, 0) != 0 || k.size() <= kPrefix.size() + kFormatSuffix.size() ||
          k.compare(k.size() - kFormatSuffix.size(), kFormatSuffix.size(), kFormatSuffix) != 0) {
        continue;
      }
      const std::string name = k.substr(kPrefix.size(), k.size() - kPrefix.size() - kFormatSuffix.size());
      tensors.emplace_back(name, v.type == GgufValueType::kString ? v.s : std::string("?"));
      calq_tensors_.insert(name);
    }
    size_t kron_factors = 0;  // calq's online input transforms (reported per tensor in check_tensors)
    size_t lora_tensors = 0;  // LoRA adapter factors inside the model file (likewise)
    for (const GgufTensorInfo& t : f_.tensors()) {
      kron_factors += t.name.find("calq_kron") != std::string::npos;
      lora_tensors += is_lora_factor(t.name);
    }
    if (!requires_calq && tensors.empty() && kron_factors == 0 && lora_tensors == 0) return;
    r_.calq_only = true;
    error("", fmt::format("calq-only file: llama.cpp cannot load it ({} tensor{} in calq-specific formats{}{})",
                          tensors.size(), tensors.size() == 1 ? "" : "s",
                          kron_factors == 0 ? std::string()
                                            : fmt::format(", {} online transform factor{}", kron_factors,
                                                          kron_factors == 1 ? "" : "s"),
                          lora_tensors == 0 ? std::string()
                                            : fmt::format(", {} LoRA adapter tensor{}", lora_tensors,
                                                          lora_tensors == 1 ? "" : "s")));
    for (const auto& [name, format] : tensors) {
      error(name, fmt::format("holds calq format '{}' as raw I8 bytes, which llama.cpp cannot compute with", format));
    }
  }

  // A uint32 scalar, or (array_ok) a per-layer uint32/int32 array; nullopt when absent or mistyped.
  std::optional<std::vector<int64_t>> counts(std::string_view suffix, bool required, bool array_ok) {
    const std::string k = key(suffix);
    const GgufValue* v = f_.find(k);
    if (v == nullptr) {
      if (required) error(k, "missing: llama.cpp requires it");
      return std::nullopt;
    }
    if (v->type == GgufValueType::kUint32) return std::vector<int64_t>{static_cast<int64_t>(v->u)};
    if (array_ok && v->type == GgufValueType::kArray &&
        (v->array_type == GgufValueType::kUint32 || v->array_type == GgufValueType::kInt32)) {
      std::vector<int64_t> out(v->uints.begin(), v->uints.end());
      out.insert(out.end(), v->ints.begin(), v->ints.end());
      return out;
    }
    error(k, fmt::format("is {}; llama.cpp reads it as uint32{}", gguf_value_type_name(v->type),
                         array_ok ? " (or a per-layer uint32/int32 array)" : ""));
    return std::nullopt;
  }

  void float32_key(std::string_view suffix, bool required) {
    const std::string k = key(suffix);
    const GgufValue* v = f_.find(k);
    if (v == nullptr) {
      if (required) error(k, "missing: llama.cpp requires it");
    } else if (v->type != GgufValueType::kFloat32) {
      error(k, fmt::format("is {}; llama.cpp reads it as float32", gguf_value_type_name(v->type)));
    } else if (!(v->f > 0)) {
      error(k, fmt::format("is {}; it must be positive", v->f));
    }
  }

  static int64_t at_layer(const std::vector<int64_t>& v, int64_t layer) {
    return v.size() == 1 ? v[0] : v[static_cast<size_t>(layer)];
  }

  void check_hparams() {
    const auto ctx = counts("context_length", true, false);
    const auto embd = counts("embedding_length", true, false);
    const auto blocks = counts("block_count", true, false);
    const auto ff = counts("feed_forward_length", true, true);
    const auto heads = counts("attention.head_count", true, true);
    const auto heads_kv = counts("attention.head_count_kv", false, true);
    const auto key_len = counts("attention.key_length", false, false);
    const auto value_len = counts("attention.value_length", false, false);
    const auto rope_dim = counts("rope.dimension_count", false, false);
    counts("vocab_size", false, false);
    // Experts: llama.cpp's MoE loaders need both counts (qwen2moe/qwen3moe throw without them).
    const bool moe_arch = arch_ == "qwen2moe" || arch_ == "qwen3moe";
    const auto n_expert = counts("expert_count", moe_arch, false);
    const auto n_expert_used = counts("expert_used_count", moe_arch || n_expert.has_value(), false);
    const auto ff_exp = counts("expert_feed_forward_length", false, false);
    const auto ff_shexp = counts("expert_shared_feed_forward_length", false, false);
    float32_key("attention.layer_norm_rms_epsilon", true);
    float32_key("rope.freq_base", false);
    (void)ctx;
    if (!embd || !blocks || !ff || !heads) return;
    n_embd_ = (*embd)[0];
    n_layer_ = (*blocks)[0];
    if (n_expert && (*n_expert)[0] > 0) {
      n_expert_ = (*n_expert)[0];
      if (!n_expert_used || (*n_expert_used)[0] <= 0 || (*n_expert_used)[0] > n_expert_) {
        error(key("expert_used_count"), fmt::format("must be in [1, {}] (expert_count)", n_expert_));
        return;
      }
      // llama.cpp's fallbacks: n_ff / n_expert_used for the expert width (the llama loader uses
      // n_ff itself), n_ff for the shared expert's.
      n_ff_exp_ = arch_ == "llama" ? (*ff)[0] : ff_exp ? (*ff_exp)[0] : (*ff)[0] / (*n_expert_used)[0];
      n_ff_shexp_ = ff_shexp ? (*ff_shexp)[0] : (*ff)[0];
    } else if (moe_arch) {
      error(key("expert_count"), "must be > 0 for a mixture-of-experts architecture");
      return;
    }
    const auto per_layer_ok = [&](const std::vector<int64_t>& v, std::string_view suffix) {
      if (v.size() != 1 && static_cast<int64_t>(v.size()) != n_layer_) {
        error(key(suffix), fmt::format("has {} per-layer values for {} layers", v.size(), n_layer_));
        return false;
      }
      return true;
    };
    if (!per_layer_ok(*ff, "feed_forward_length") || !per_layer_ok(*heads, "attention.head_count")) return;
    const std::vector<int64_t> kv = heads_kv.value_or(*heads);
    if (!per_layer_ok(kv, "attention.head_count_kv")) return;
    const int64_t n_head0 = (*heads)[0];
    if (n_head0 <= 0 || (!key_len && n_embd_ % n_head0 != 0)) {
      error(key("attention.head_count"),
            fmt::format("{} heads do not divide embedding_length {}", n_head0, n_embd_));
      return;
    }
    head_k_ = key_len ? (*key_len)[0] : n_embd_ / n_head0;
    head_v_ = value_len ? (*value_len)[0] : n_embd_ / n_head0;
    for (int64_t l = 0; l < n_layer_; ++l) {
      const int64_t h = at_layer(*heads, l);
      const int64_t hk = at_layer(kv, l);
      if (h <= 0 || hk <= 0 || h % hk != 0) {
        error(key("attention.head_count_kv"), fmt::format("layer {}: {} KV heads do not divide {} heads", l, hk, h));
        return;
      }
      layers_.push_back({at_layer(*ff, l), h, hk});
    }
    if (rope_dim && (*rope_dim)[0] > head_k_) {
      error(key("rope.dimension_count"),
            fmt::format("{} exceeds the head dimension {}", (*rope_dim)[0], head_k_));
    }
    hparams_ok_ = true;
  }

  void check_tokenizer() {
    const GgufValue* model = f_.find("tokenizer.ggml.model");
    if (model == nullptr) {
      error("tokenizer.ggml.model", "missing: llama.cpp needs the tokenizer type");
      return;
    }
    if (model->type != GgufValueType::kString) {
      error("tokenizer.ggml.model", fmt::format("is {}, not a string", gguf_value_type_name(model->type)));
      return;
    }
    if (std::find(kTokenizerModels.begin(), kTokenizerModels.end(), model->s) == kTokenizerModels.end()) {
      error("tokenizer.ggml.model", fmt::format("'{}' is not a tokenizer model llama.cpp knows", model->s));
      return;
    }
    if (model->s == "none" || model->s == "no_vocab") return;
    const GgufValue* tokens = f_.find("tokenizer.ggml.tokens");
    if (tokens == nullptr) {
      error("tokenizer.ggml.tokens", "missing: llama.cpp needs the token list");
      return;
    }
    if (tokens->type != GgufValueType::kArray || tokens->array_type != GgufValueType::kString ||
        tokens->array_size() == 0) {
      error("tokenizer.ggml.tokens", "must be a non-empty string array");
      return;
    }
    n_vocab_ = static_cast<int64_t>(tokens->array_size());
    const auto same_length = [&](std::string_view k, std::initializer_list<GgufValueType> types) {
      const GgufValue* v = f_.find(k);
      if (v == nullptr) return;
      if (v->type != GgufValueType::kArray ||
          std::find(types.begin(), types.end(), v->array_type) == types.end()) {
        error(std::string(k), "has the wrong value type");
      } else if (static_cast<int64_t>(v->array_size()) != n_vocab_) {
        error(std::string(k), fmt::format("has {} entries for {} tokens", v->array_size(), n_vocab_));
      }
    };
    same_length("tokenizer.ggml.scores", {GgufValueType::kFloat32});
    same_length("tokenizer.ggml.token_type", {GgufValueType::kInt32});
    if (model->s == "gpt2") {
      const GgufValue* merges = f_.find("tokenizer.ggml.merges");
      if (merges == nullptr) {
        error("tokenizer.ggml.merges", "missing: a gpt2 tokenizer needs its merges");
      } else if (merges->type != GgufValueType::kArray || merges->array_type != GgufValueType::kString) {
        error("tokenizer.ggml.merges", "must be a string array");
      }
      if (f_.find("tokenizer.ggml.pre") == nullptr) {
        warn("tokenizer.ggml.pre", "missing: llama.cpp falls back to its default pre-tokenizer, which may split text "
                                   "differently from the model's own");
      }
    }
    for (const auto& [k, v] : f_.metadata()) {
      if (k.rfind("tokenizer.ggml.", 0) != 0 || k.size() < 9 || k.compare(k.size() - 9, 9, "_token_id") != 0) continue;
      if (v.type != GgufValueType::kUint32) {
        error(k, fmt::format("is {}; llama.cpp reads it as uint32", gguf_value_type_name(v.type)));
      } else if (static_cast<int64_t>(v.u) >= n_vocab_) {
        warn(k, fmt::format("id {} is outside the {}-token vocabulary; llama.cpp ignores it", v.u, n_vocab_));
      }
    }
  }

  struct LayerDims {
    int64_t n_ff, n_head, n_head_kv;
  };
  int64_t n_expert_ = 0, n_ff_exp_ = 0, n_ff_shexp_ = 0;

  // name -> (expected ne, required)
  void expect(std::map<std::string, std::pair<std::vector<int64_t>, bool>>& m, std::string name,
              std::vector<int64_t> ne, bool required) {
    m.emplace(std::move(name), std::make_pair(std::move(ne), required));
  }

  void check_tensors() {
    if (f_.tensors().empty()) {
      error("", "no tensors: a vocabulary-only file, which llama.cpp loads only with --vocab-only");
      return;
    }
    if (!hparams_ok_) return;
    int64_t n_vocab = n_vocab_;
    if (const GgufValue* v = f_.find(key("vocab_size")); v != nullptr && v->type == GgufValueType::kUint32) {
      if (n_vocab > 0 && static_cast<int64_t>(v->u) != n_vocab) {
        warn(key("vocab_size"), fmt::format("{} differs from the {} tokens of tokenizer.ggml.tokens", v->u, n_vocab));
      }
      if (n_vocab == 0) n_vocab = static_cast<int64_t>(v->u);
    }
    if (n_vocab == 0) {
      const GgufTensorInfo* t = f_.find_tensor("token_embd.weight");
      if (t != nullptr && t->ne.size() == 2) n_vocab = t->ne[1];
    }
    std::map<std::string, std::pair<std::vector<int64_t>, bool>> want;
    expect(want, "token_embd.weight", {n_embd_, n_vocab}, true);
    expect(want, "output_norm.weight", {n_embd_}, true);
    expect(want, "output.weight", {n_embd_, n_vocab}, arch_ == "qwen2moe");  // its loader requires the head
    expect(want, "rope_freqs.weight", {head_k_ / 2}, false);
    for (int64_t l = 0; l < n_layer_; ++l) {
      const LayerDims& d = layers_[static_cast<size_t>(l)];
      const auto n = [&](std::string_view what) { return fmt::format("blk.{}.{}", l, what); };
      const int64_t q = d.n_head * head_k_;
      const int64_t k = d.n_head_kv * head_k_;
      const int64_t v = d.n_head_kv * head_v_;
      expect(want, n("attn_norm.weight"), {n_embd_}, true);
      expect(want, n("attn_q.weight"), {n_embd_, q}, true);
      expect(want, n("attn_k.weight"), {n_embd_, k}, true);
      expect(want, n("attn_v.weight"), {n_embd_, v}, true);
      expect(want, n("attn_output.weight"), {d.n_head * head_v_, n_embd_}, true);
      expect(want, n("attn_q.bias"), {q}, false);
      expect(want, n("attn_k.bias"), {k}, false);
      expect(want, n("attn_v.bias"), {v}, false);
      expect(want, n("attn_output.bias"), {n_embd_}, false);
      expect(want, n("ffn_norm.weight"), {n_embd_}, true);
      if (arch_ == "qwen3" || arch_ == "qwen3moe") {
        expect(want, n("attn_q_norm.weight"), {head_k_}, true);
        expect(want, n("attn_k_norm.weight"), {head_k_}, true);
      }
      if (n_expert_ == 0) {
        expect(want, n("ffn_gate.weight"), {n_embd_, d.n_ff}, true);
        expect(want, n("ffn_down.weight"), {d.n_ff, n_embd_}, true);
        expect(want, n("ffn_up.weight"), {n_embd_, d.n_ff}, true);
        continue;
      }
      // Experts stacked along ne[2]; the router stays a 2-D tensor.
      expect(want, n("ffn_gate_inp.weight"), {n_embd_, n_expert_}, true);
      expect(want, n("ffn_gate_exps.weight"), {n_embd_, n_ff_exp_, n_expert_}, true);
      expect(want, n("ffn_down_exps.weight"), {n_ff_exp_, n_embd_, n_expert_}, true);
      expect(want, n("ffn_up_exps.weight"), {n_embd_, n_ff_exp_, n_expert_}, true);
      if (arch_ == "qwen2moe") {
        expect(want, n("ffn_gate_inp_shexp.weight"), {n_embd_}, true);
        expect(want, n("ffn_gate_shexp.weight"), {n_embd_, n_ff_shexp_}, true);
        expect(want, n("ffn_down_shexp.weight"), {n_ff_shexp_, n_embd_}, true);
        expect(want, n("ffn_up_shexp.weight"), {n_embd_, n_ff_shexp_}, true);
      }
    }
    for (const GgufTensorInfo& t : f_.tensors()) {
      const auto it = want.find(t.name);
      if (it == want.end() && t.name.find("calq_kron") != std::string::npos) {
        error(t.name, "is a factor of a calq online input transform (calq_kron), which llama.cpp does not apply");
        continue;
      }
      if (it == want.end() && is_lora_factor(t.name)) {
        error(t.name, "is a LoRA adapter factor inside the model file, which llama.cpp's model loader refuses (it "
                      "takes adapters from a separate adapter GGUF, --lora)");
        continue;
      }
      if (it == want.end()) {
        error(t.name,
              fmt::format("is not a tensor llama.cpp's {} loader uses (it refuses files with extra tensors)", arch_));
        continue;
      }
      if (calq_tensors_.count(t.name) == 0 && t.ne != it->second.first) {
        error(t.name, fmt::format("has ne {} but llama.cpp expects {}", fmt::join(t.ne, ", "),
                                  fmt::join(it->second.first, ", ")));
      }
    }
    for (const auto& [name, spec] : want) {
      if (spec.second && f_.find_tensor(name) == nullptr) error(name, "missing: llama.cpp requires this tensor");
    }
  }

  const GgufFile& f_;
  GgufCheckReport& r_;
  std::string arch_;
  std::set<std::string> calq_tensors_;
  int64_t n_vocab_ = 0;
  int64_t n_embd_ = 0;
  int64_t n_layer_ = 0;
  int64_t head_k_ = 0;
  int64_t head_v_ = 0;
  std::vector<LayerDims> layers_;
  bool hparams_ok_ = false;
};

}  // namespace

size_t GgufCheckReport::errors() const {
  return static_cast<size_t>(std::count_if(findings.begin(), findings.end(),
                                           [](const GgufFinding& f) { return f.level == GgufFindingLevel::kError; }));
}

size_t GgufCheckReport::warnings() const { return findings.size() - errors(); }

GgufCheckReport check_gguf(const GgufFile& file) {
  GgufCheckReport r;
  r.file = file.path().string();
  Checker(file, r).run();
  return r;
}

GgufCheckReport check_gguf_file(const std::filesystem::path& path) {
  std::optional<GgufFile> file;
  try {
    file.emplace(GgufFile::open(path));
  } catch (const Error& e) {
    GgufCheckReport r;
    r.file = path.string();
    r.findings.push_back(
        {GgufFindingLevel::kError, "", fmt::format("llama.cpp's GGUF reader would refuse it: {}", e.what())});
    return r;
  }
  return check_gguf(*file);
}

}  // namespace calq::io
