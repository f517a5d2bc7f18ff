// Writing a Model as a Hugging Face model folder (config.json + safetensors), the layout
// transformers' save_pretrained writes and load_hf_model (model.h) reads.
//
// Contract of hf_config_json(config): config.json's text for `config`, keys sorted as transformers
// writes them (to_json_string sorts keys): architectures (the model type's transformers class,
// e.g. "qwen2_moe" -> "Qwen2MoeForCausalLM"), model_type, vocab_size, hidden_size,
// intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim,
// hidden_act "silu", rms_norm_eps, rope_theta, max_position_embeddings, tie_word_embeddings,
// bos/eos_token_id (when set), the architecture's refused keys (architecture.h) as false, and the
// window keys of its WindowRule: Mistral's sliding_window (null when none); Qwen2's
// use_sliding_window, sliding_window and max_window_layers (layer_types when the windowed layers
// are not the ones from some layer on); rope_scaling (rope_type, factor, and llama3's
// low/high_freq_factor and original_max_position_embeddings); a mixture-of-experts table's keys
// (MoeRule: its expert-count and expert-width keys, num_experts_per_tok,
// shared_expert_intermediate_size, norm_topk_prob where the architecture has the key); and
// torch_dtype ("float32" / "bfloat16" for `dtype`).
// parse_hf_config_text of the text gives `config` back (for a config parse_hf_config could have
// produced). What config.json cannot express (a window the architecture's rule cannot say, rotary
// factors without their rope_scaling, experts on a dense table) is kUnsupported.
//
// Contract of write_hf_model(model, folder, options, pool):
//  * With options.quant (hf_quant.h: GPTQ v1/v2, AWQ, compressed-tensors), every per-layer linear
//    and expert but the routers and shared-expert gates must be quantized in one format the scheme
//    holds (else kInvalidArgument naming the tensor and the formats); they are written as the
//    scheme's tensors (hf_quant_tensors), config.json gets "quantization_config", and GPTQ folders
//    quantize_config.json too. Everything else — embedding, head, norms, routers — is written as
//    below in options.dtype.
//  * Tensors: every tensor the architecture's table and the config call for (arch.slots × layers,
//    × experts for expert roles, has_role; the head only when not tied), under hf_tensor_name, with the shape expected_shape
//    gives, in options.dtype (F32 or BF16: norms and biases too, as transformers saves a model in
//    one dtype; BF16 through the registered "bf16" format, round to nearest even). Quantized
//    weights are written dequantized. load_hf_model of the folder gives the same config and the
//    same float32 values (exactly for F32; the bf16 rounding of them for BF16), so the same logits.
//  * Files: config.json (hf_config_json with options.dtype), model.safetensors (or shards of at most
//    options.max_shard_bytes with model.safetensors.index.json, split as save_pretrained splits:
//    io::write_sharded_safetensors_streamed; metadata {"format": "pt"}), then options.extra_files
//    (e.g. tokenizer.json) as given. Float tensors are encoded one at a time as the files are
//    written (the memory beyond the model is one tensor's bytes); a quantized scheme's packed
//    tensors are all made first.
//  * A model calq alone can run (online rotations, input transforms, LoRA adapters, activation
//    quantization) is kUnsupported: a Hugging Face folder cannot say so.
//  * Atomic: everything is written into a temporary folder beside `folder`, which is then renamed
//    to it. An existing `folder` is replaced only with options.overwrite (else kInvalidArgument
//    naming it and the "force" option), and only when it is empty or holds config.json or
//    *.safetensors (any other folder is kInvalidArgument: it would be removed whole). On any error no
//    `folder` (or the old one, untouched) and no temporary is left.
//
// hf_tensor_entries(config): the tensors a folder of `config` holds, in the order write_hf_model
// visits them — the table's global slots (no head when tied), then layer by layer the table's
// per-layer slots (has_role), each expert of an expert role in turn — with their names
// (hf_tensor_name) and shapes (expected_shape). A writer that makes the tensors itself (a synthetic
// model, model/synth.h) walks the same list.
//
// write_hf_folder(folder, contents, options): the folder half of write_hf_model — the checks of an
// existing `folder`, the temporary sibling renamed into place, config.json, the tensors (streamed,
// shards as above, options.progress before each tensor), then contents.files in order — for a
// caller that has the config text and the tensors' producers.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "core/thread_pool.h"
#include "io/safetensors.h"
#include "model/hf_quant.h"
#include "model/model.h"

namespace calq::model {

struct HfExportOptions {
  DType dtype = DType::kF32;  // kF32 or kBF16 (anything else is kInvalidArgument)
  // Files written into the folder beside config.json: name (no path separators) -> contents.
  std::vector<std::pair<std::string, std::string>> extra_files;
  bool overwrite = false;
  uint64_t max_shard_bytes = 5'000'000'000;  // save_pretrained's default "5GB"
  HfQuantScheme quant = HfQuantScheme::kNone;  // kNone: quantized weights are written dequantized
};

// The transformers class of a model type: "llama" -> "LlamaForCausalLM", "qwen2_moe" ->
// "Qwen2MoeForCausalLM" (each '_'-separated part capitalized).
std::string hf_class_name(std::string_view model_type);

std::string hf_config_json(const ModelConfig& config, DType dtype = DType::kF32);

void write_hf_model(const Model& model, const std::filesystem::path& folder, const HfExportOptions& options,
                    ThreadPool& pool);

struct HfTensorEntry {
  std::string name;
  TensorRole role = TensorRole::kTokenEmbedding;
  int64_t layer = -1;   // -1: a global tensor
  int64_t expert = -1;  // -1: not an expert's
  Shape shape;
};
std::vector<HfTensorEntry> hf_tensor_entries(const ModelConfig& config);

struct HfFolderContents {
  std::string config_text;
  std::vector<io::TensorToProduce> tensors;
  std::vector<std::pair<std::string, std::string>> files;  // name -> text, after the tensors
};
struct HfFolderOptions {
  bool overwrite = false;
  uint64_t max_shard_bytes = 5'000'000'000;
  io::ShardProgress progress;
};
void write_hf_folder(const std::filesystem::path& folder, const HfFolderContents& contents,
                     const HfFolderOptions& options);

}  // namespace calq::model
