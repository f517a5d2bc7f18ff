// LoRA adapters as a PEFT adapter folder (Hugging Face peft, `PeftModel.save_pretrained` /
// `from_pretrained` of a LoraConfig on LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM):
//
//   adapter_model.safetensors  base_model.model.<module>.lora_A.weight  [r, in]   float32
//                              base_model.model.<module>.lora_B.weight  [out, r]  float32
//       <module> = the linear's path in the transformers model, e.g. model.layers.3.self_attn.q_proj,
//       model.layers.3.mlp.down_proj (the architecture's Hugging Face name without ".weight")
//   adapter_config.json        LoraConfig: peft_type "LORA", task_type "CAUSAL_LM", r, lora_alpha,
//                              lora_dropout, target_modules, bias "none", fan_in_fan_out false,
//                              inference_mode true, base_model_name_or_path, modules_to_save null,
//                              init_lora_weights true, use_rslora false, use_dora false,
//                              rank_pattern {}, alpha_pattern {}
//   calq_adapter.json          calq's provenance (PEFT never reads it): base_model_sha256 (see
//                              api::model_source_sha256), base_model_path, calq_version
//
// The adapted linear computes W·x + (lora_alpha / r)·B·A·x (model/lora_adapter.h).
//
// Contract of write_peft_adapters:
//  * Writes every adapter of `model` (at least one, else kInvalidArgument). r and lora_alpha are the
//    most common rank and alpha (ties: the smaller); a linear with another rank or alpha gets a
//    rank_pattern / alpha_pattern entry keyed by its module path ("model.layers.3.self_attn.q_proj",
//    matched by PEFT as the regex (.*\.)?(key)$). target_modules lists the short names ("q_proj")
//    when every layer adapts the same roles, else every adapted module's path.
//  * An adapter whose rank exceeds min(in, out) of its linear is kInvalidArgument (nothing written).
//  * Atomic: the files are written into a temporary folder beside `dir`, which is then renamed to
//    `dir`; an existing `dir` is replaced only with `overwrite` (else kInvalidArgument naming it and
//    the "force" option), and only when it is empty or holds adapter_config.json or
//    adapter_model.safetensors (any other folder is kInvalidArgument: it would be removed whole).
//    On any error no `dir` (or the old one, untouched) is left, and no temporary.
//
// Contract of load_peft_adapters (nothing in `model` changes unless everything checks out):
//  * Base check: with options.check_base_hash, calq_adapter.json must exist and its
//    base_model_sha256 equal options.base_model_sha256; else Error(kInvalidArgument) naming the
//    folder and both hashes (the option adapter_skip_hash_check of the API skips it).
//  * adapter_config.json: peft_type "LORA"; use_dora, fan_in_fan_out false; bias "none";
//    modules_to_save empty (else kUnsupported); r >= 1 and lora_alpha > 0 finite (also in the
//    patterns); target_modules a list (a module is targeted when its path equals an entry or ends in
//    "." + entry), a regex string (full match of the path) or "all-linear"; layers_to_transform
//    (int or list, optional) restricts the layers. Every list entry (and a regex) must match some
//    per-layer linear of the model (q/k/v/o_proj, gate/up/down_proj), else kInvalidArgument.
//    use_rslora scales by lora_alpha / sqrt(r), which is kept as alpha = lora_alpha·sqrt(r).
//  * adapter_model.safetensors: every tensor is the lora_A/lora_B of a targeted module of a layer
//    the model has (other names: kInvalidArgument naming the file and tensor); every targeted
//    module has both; A is [rank, in], B [out, rank] with in/out the linear's and rank the one r or
//    rank_pattern gives it; rank <= min(in, out); values finite (F32/F16/BF16 read, held as f32).
//  * The model may not have adapters already (kInvalidArgument).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "model/model.h"

namespace calq::model {

inline constexpr std::string_view kPeftWeightsFile = "adapter_model.safetensors";
inline constexpr std::string_view kPeftConfigFile = "adapter_config.json";
inline constexpr std::string_view kCalqAdapterFile = "calq_adapter.json";

// "model.layers.3.self_attn.q_proj": the module path PEFT names a per-layer linear by.
std::string peft_module_path(const Architecture& arch, int64_t layer, TensorRole role);
// "q_proj": the last component of the module path.
std::string peft_module_name(const Architecture& arch, TensorRole role);
// "base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight" (which = 'A' or 'B').
std::string peft_tensor_name(const Architecture& arch, int64_t layer, TensorRole role, char which);

struct AdapterProvenance {
  std::string base_model_sha256;  // the base model's hash (api::model_source_sha256)
  std::string base_model_path;    // as given; also adapter_config.json's base_model_name_or_path
  std::string calq_version;
};

struct PeftWriteOptions {
  AdapterProvenance provenance;
  double lora_dropout = 0;  // recorded for training frameworks; calq's runtime has no dropout
  bool overwrite = false;
};

void write_peft_adapters(const Model& model, const std::filesystem::path& dir, const PeftWriteOptions& options);

struct PeftReadOptions {
  std::string base_model_sha256;  // the model's hash, compared with calq_adapter.json's
  bool check_base_hash = true;
};

struct PeftAdapterSummary {
  int64_t count = 0;  // adapted linears
  int64_t r = 0, min_rank = 0, max_rank = 0;
  double lora_alpha = 0;
  uint64_t bytes = 0;  // float32 bytes of A and B, as Model::storage_bytes counts them
  std::vector<std::string> target_modules;  // as the config lists them (a regex: one entry)
  AdapterProvenance provenance;             // from calq_adapter.json (empty when absent)
};

PeftAdapterSummary load_peft_adapters(Model& model, const std::filesystem::path& dir, const PeftReadOptions& options);

}  // namespace calq::model
