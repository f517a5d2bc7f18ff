// Whole-model quantization of a loaded model (Hugging Face or GGUF) into any registered format,
// driven by the layer-sequential calibration pipeline (sequential.h): `calq quantize --format`.
//
// Which format each weight gets (plan_model_quantization):
//  * --rule 'REGEX=FORMAT' rules, in order, first match wins. A rule matches a tensor when the
//    regex (ECMAScript, searched, not anchored) matches its GGUF name ("blk.3.attn_v.weight",
//    "token_embd.weight", "output.weight") or its Hugging Face name
//    ("model.layers.3.self_attn.v_proj.weight"). FORMAT is a registered format name or "f32" (keep
//    float). A rule that matches no tensor of the model is an Error (a typo would otherwise pass
//    silently), as is a matched tensor whose shape FORMAT cannot store.
//  * Otherwise linear weights get the main format; the token embedding and the output head get
//    the "head format": by default higher precision, as llama.cpp's mixes give them — q6_k when the
//    main format has fewer than 6.5 bits per weight, q8_0 otherwise (f16 when the row length fits
//    neither block). Tied embeddings are one tensor.
//  * A linear weight whose row length the main format cannot store falls back to q8_0, then f16
//    (llama.cpp falls back the same way), and the plan says so.
//
// Method "rtn": round to nearest in the format, with the observer's ranges (formats with a free
// clipping range: the int family; the others apply their own fixed scale rule) and, when
// statistics are available, each weight's importance = E[x²] of its input channels (the
// importance-weighted encoders of the GGUF k-quants/legacy types and the MSE range search use it).
// Statistics come from calibration (run layer by layer, true sequential by default) or from a
// statistics file (calq calibrate); without either the weights are rounded with no importance.
//
// Determinism: every step is bitwise reproducible for any thread count (sequential.h, formats).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <regex>
#include <span>
#include <string>
#include <vector>

#include "calib/collectors.h"
#include "calib/observer.h"
#include "core/thread_pool.h"
#include "formats/format.h"
#include "model/model.h"
#include "pipeline/layer_methods.h"
#include "pipeline/mix.h"
#include "pipeline/sequential.h"
#include "quant/recipe.h"

namespace calq::pipeline {

struct TensorRule {
  std::string text;       // as given: "attn_v=q6_k"
  std::string pattern;
  std::regex regex;
  const Format* format = nullptr;  // nullptr: keep float32
};
// Parses 'REGEX=FORMAT' (split at the last '='). Errors name the rule: no '=', an invalid regex,
// an unknown format.
TensorRule parse_tensor_rule(const std::string& text);

// The default "head format" above for a main format of `main_bits_per_weight`: q6_k below 6.5,
// else q8_0, the first that can store [rows, cols]; nullptr (keep float) when neither can.
const Format* default_head_format(double main_bits_per_weight, int64_t rows, int64_t cols);

// How a mixture-of-experts model's experts get their calibration statistics (calib's expert
// sites): "natural" — each expert's own routed tokens; "all" — every calibration token through
// every expert, for statistics only (SequentialOptions::all_experts; outputs still follow the
// router); "rtn-fallback" — an expert the router sent fewer than expert_min_tokens tokens is
// rounded to nearest (the "rtn" method) with the importance of the layer's MLP input over all
// tokens (moe_in) for gate/up, whatever the recipe's weight quantizer.
enum class ExpertPolicy : uint8_t { kNatural, kAllExperts, kRtnFallback };
std::string_view expert_policy_name(ExpertPolicy policy);  // "natural", "all", "rtn-fallback"
// kInvalidArgument Error listing the names for anything else.
ExpertPolicy expert_policy_by_name(std::string_view name);

struct ModelQuantizeOptions {
  const Format* format = nullptr;       // main format (required; with a mix, the mix's main type's)
  std::vector<TensorRule> rules;
  const Format* head_format = nullptr;  // nullptr: the default above
  const calib::Observer* observer = nullptr;  // nullptr: min-max
  bool use_importance = true;
  // Method steps (quant/recipe.h, applied per layer by layer_methods.h); empty: "rtn".
  quant::Recipe recipe;
  // An activation scheme given apart from the chain: it joins the recipe as its last step (with
  // llm_int8_threshold as llm-int8's threshold option). A recipe with its own activation step and
  // act != kNone is an Error.
  ActivationScheme act = ActivationScheme::kNone;
  float llm_int8_threshold = 6.0f;
  // Progress of the training steps (qat-block, qat-e2e), on the calling thread; may be empty.
  quant::TrainingProgressFn on_training;
  // Mixture-of-experts models (ignored otherwise): the experts' statistics policy, and the routed
  // token count under which an expert counts as under-covered (0: the expert's input width, the
  // fewest rows that give GPTQ a full-rank Hessian).
  ExpertPolicy expert_policy = ExpertPolicy::kNatural;
  int64_t expert_min_tokens = 0;
  // Non-empty: each finished layer's quantized weights go to files in this folder (created if
  // missing; layer_store.h) and the model holds them memory-mapped, so memory stays at about one
  // layer whatever the model's size. The caller removes the folder once the model is written.
  std::filesystem::path layer_store;
  // llama.cpp's named mix (mix.h: q4_k_m, ...): every tensor no rule matches (and, with a head
  // format, every tensor but the embedding and head) gets the type the mix gives it (its per-tensor
  // rules and fallbacks, from the model's shape) — so calibration methods (GPTQ, AWQ) write
  // llama.cpp's mixes.
  const QuantMix* mix = nullptr;
};

struct TensorAssignment {
  model::TensorRole role;
  int64_t layer = -1;         // -1 for the embedding and head
  int64_t expert = -1;        // a MoE expert's weight (role kExpertGate/Up/Down): its index
  std::string name;           // GGUF name (an expert's: its layer's stacked tensor)
  int64_t rows = 0, cols = 0;
  const Format* format = nullptr;  // nullptr: float32
  int rule = -1;              // index of the matching rule, -1 for defaults
  bool fell_back = false;
};

// The format of every linear weight, the embedding and the (untied) head, in model order. With a
// training step in the recipe (qat-block, qat-e2e), a layer linear whose format has no
// fake-quantization path (grad::has_fake_quant) is an ErrorKind::kUnsupported Error naming the
// step, the tensor and the format. With an activation scheme (options.act or the recipe's step),
// a layer linear in a format whose codes are not integers (families nf4, fp8, mx) is an
// ErrorKind::kInvalidArgument Error naming the scheme, the tensor and the format. A layer
// transform (flatquant) needs int formats on every layer linear and no training step after it
// (ErrorKind::kUnsupported naming the steps or the tensor). A MoE model's experts are planned
// one by one (rules match the stacked GGUF name, which names all the layer's experts, or an
// expert's Hugging Face name); the router and the shared expert's gate stay float, as llama.cpp
// keeps them. Training, layer-transform and model-transform steps need the plain Llama block
// (ModelConfig::plain_llama_block): refused (kUnsupported) for experts, q/k head norms and rotary
// scaling.
std::vector<TensorAssignment> plan_model_quantization(const model::Model& model, const ModelQuantizeOptions& options);

struct QuantizeProgress {
  const TensorAssignment* tensor = nullptr;
  bool used_importance = false;
  double seconds = 0;
};

struct ModelQuantizeResult {
  std::vector<TensorAssignment> plan;
  std::optional<SequentialResult> calibration;  // when calibration ran
  int64_t n_with_importance = 0;
  double seconds_quantize = 0;  // encoding only (and the methods' searches)
  std::vector<MethodEvent> events;  // what the method steps did, per layer
};

// Quantizes `model` in place. A model reconstruction step (qat-e2e) runs last, after the embedding
// and head are quantized, with a copy of the float model (after model transforms) as its teacher;
// it needs `samples`. `samples` (calibration token sequences) may be empty; then `stats`
// (from a statistics file) may give the importance; both absent: no importance.
// `sequential.on_layer` and `on_tensor` report progress on the calling thread.
ModelQuantizeResult quantize_model(model::Model& model, const ModelQuantizeOptions& options,
                                   std::span<const std::vector<int32_t>> samples, const SequentialOptions& sequential,
                                   const calib::CalibrationStats* stats,
                                   const std::function<void(const QuantizeProgress&)>& on_tensor, ThreadPool& pool);

// Checks that `stats` describes `model` (every site of every layer present with the model's
// widths, and carrying mean_sq when importance is wanted); Error naming `origin` otherwise.
void check_stats_match(const calib::CalibrationStats& stats, const model::Model& model, const std::string& origin);

}  // namespace calq::pipeline
