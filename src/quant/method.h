// Method — one quantization method a recipe step can name (rotate, smoothquant, awq, flatquant,
// rtn, gptq, qat-block, qat-e2e, zeroqat, autoround, lora-compensate, the activation schemes), and the registry of all of them. The shape follows formats/format.h:
// each method is one file in quant/ (method_<name>.cpp) defining `MethodList make_<name>_methods()`,
// and one line in method_registry.cpp registers it.
//
// A method declares (MethodTraits):
//  * its stage, which says when the pipeline calls it and which hook it implements:
//      kModelTransform  — rewrites the whole float model before calibration (rotate);
//                         hook transform_model();
//      kScaleMigration  — per input group of a layer: scales folded into the group's producer so
//                         the float layer computes the same function (smoothquant, awq); hook migrate();
//      kLayerTransform  — per decoder layer, before its weight quantizer: learned transforms of the
//                         layer's input sites, trained against the full-precision layer's outputs
//                         (flatquant); hook transform_layer(). The pipeline replaces the consumers'
//                         weights, folds the smoothing into the producers, stores the transforms on
//                         the layer (applied online by the runtime) and transforms the sites'
//                         statistics; it carries the full-precision stream too.
//      kWeightQuantizer — per linear weight: float to its format (rtn, gptq); hook quantize();
//      kLayerReconstruction — per decoder layer, after its weight quantizer: trains the layer's
//                         weights and quantization parameters against the full-precision layer's
//                         outputs and writes the quantized linears anew (qat-block); hook
//                         reconstruct(). The pipeline then carries the full-precision stream too.
//      kModelReconstruction — once, after every layer (and the embedding and head) is quantized:
//                         trains the quantized linears of the whole model against the
//                         full-precision model's logits and writes them anew (qat-e2e, zeroqat); hook
//                         reconstruct_model(). Needs calibration samples (token sequences).
//      kErrorCompensation — per decoder layer, after its weight quantizer and any layer
//                         reconstruction: low-rank float adapters that absorb part of each
//                         linear's quantization error (lora-compensate); hook compensate(). The
//                         pipeline stores them on the layer (LayerWeights::adapters), so the layer's
//                         outputs, and every later layer's calibration, include them.
//      kActivation      — per linear input: the activation quantization spec (int8-token,
//                         int4-token, int8-tensor, llm-int8); hook activation().
//  * its recipe keys (OptionSpec: type, range or choices, default), parsed into its typed option struct
//    (StepOptions holds it); an unknown key, a value of the wrong type or out of range is a
//    kInvalidArgument Error naming the recipe origin, the method and the key;
//  * the calibration statistics it reads (calib::StatSet);
//  * a one-line summary, and how one of its MethodEvents reads as a progress line (event_text);
//  * its identity options: the options under which a recipe of this step alone writes the weight
//    bytes the chain "rtn" writes (e.g. awq with grid 1 and clip off), or none when it has no such
//    setting (gptq, rotate). The contract test (method_contract_test.cpp) checks them.
//
// Contract of the hooks (every registered method; the contract test loops over the registry):
// deterministic — the same inputs and options give the same bytes for any pool size; statistics a
// hook needs but did not get are a kInvalidArgument Error naming the layer and group or tensor.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <typeinfo>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "calib/collectors.h"
#include "core/tensor.h"
#include "core/thread_pool.h"
#include "formats/format.h"
#include "formats/qtensor.h"
#include "grad/model_grad.h"
#include "model/block_topology.h"
#include "model/linear_weight.h"
#include "model/model.h"

namespace calq::quant {

enum class MethodStage : uint8_t {
  kModelTransform,
  kScaleMigration,
  kWeightQuantizer,
  kLayerReconstruction,
  kModelReconstruction,
  kActivation,
  kLayerTransform,     // (appended: the enum's values are not its order; recipe.h gives the order)
  kErrorCompensation,  // (appended)
};
// "model transform", "scale migration", "weight quantizer", "layer reconstruction", "model
// reconstruction", "activation scheme", "layer transform", "error compensation".
std::string_view stage_name(MethodStage stage);

// ---- Options ----

enum class OptionType : uint8_t { kBool, kInteger, kNumber, kString };

// One recipe key of a method.
struct OptionSpec {
  std::string key;
  OptionType type = OptionType::kNumber;
  // Inclusive range of kInteger / kNumber values (min exclusive when min_exclusive).
  double min = -std::numeric_limits<double>::infinity();
  double max = std::numeric_limits<double>::infinity();
  bool min_exclusive = false;
  nlohmann::json default_value;  // the typed option struct's default
  std::string doc;               // one line
  // kString: the values it may take (non-empty); with `list`, a comma-separated list of distinct
  // ones ("q,k,v"), else exactly one of them.
  std::vector<std::string> choices;
  bool list = false;
  // "true or false", "a number in [0, 1]", "an integer in [1, 1000]", "a number > 0", "one of a,
  // b", "a comma-separated list of a, b".
  std::string expected() const;
};

// A step's parsed options: the method's typed option struct, and which keys the recipe gave
// (to_json writes those back, so that a recipe round-trips as it was written).
class StepOptions {
 public:
  StepOptions() = default;
  template <class O>
  StepOptions(O value, uint64_t given)
      : value_(std::make_shared<const O>(std::move(value))), type_(&typeid(O)), given_(given) {}

  // The typed struct (O must be the method's option type: asserted).
  template <class O>
  const O& get() const {
    check_type(typeid(O));
    return *static_cast<const O*>(value_.get());
  }
  bool empty() const { return given_ == 0; }  // no key given: every option at its default
  bool given(size_t index) const { return ((given_ >> index) & 1u) != 0; }

 private:
  void check_type(const std::type_info& type) const;

  std::shared_ptr<const void> value_;
  const std::type_info* type_ = nullptr;
  uint64_t given_ = 0;
};

// ---- What the hooks see and return ----

// One line per (layer, step, group or tensor) for the report and the JSON.
struct MethodEvent {
  int64_t layer = 0;   // −1: the whole model (model transforms)
  std::string step;    // the method's name
  std::string target;  // group ("attn_in"), tensor name, or "model"
  double value = 0;    // awq: α; smoothquant: α; gptq: dampening used (× mean diagonal)
  double error_before = 0, error_after = 0;  // output error Σ δᵀHδ where measured (awq: rtn → awq)
  double seconds = 0;
  std::vector<double> curve;  // training methods: the loss of every step, in order (empty otherwise)
};

// "; loss curve 0.31 0.29 …": at most 12 of the curve's values, evenly spaced, the first and the
// last included ("" for an empty curve).
std::string curve_text(std::span<const double> curve);

// What a hook reports for its event (the caller adds layer, step, target and the time).
struct EventValues {
  double value = 0, error_before = 0, error_after = 0;
  std::vector<double> curve;  // as MethodEvent::curve
};

// Progress of a training hook, sent after each optimizer step on the calling thread.
struct TrainingProgress {
  std::string_view step;   // the method's name
  int64_t layer = -1;      // −1: the whole model
  int64_t done = 0, total = 0;  // optimizer steps taken, of all
  double loss = 0;         // of the step just taken (its batch)
  double seconds = 0;      // since training began
  double eta_seconds = 0;  // seconds / done · (total − done)
};
using TrainingProgressFn = std::function<void(const TrainingProgress&)>;

// The statistics of one input site as the steps of a layer see them: divide_inputs() turns them
// into the statistics of x / s after a scale fold, so later steps see the inputs the layer will get.
struct InputStats {
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<float> absmax, mean_abs, mean_sq;  // empty when not collected
  std::vector<double> hessian;                   // [cols × cols]; empty when not collected

  InputStats() = default;
  explicit InputStats(const calib::SiteStats* site);  // nullptr: no statistics
  void divide_inputs(std::span<const float> s);
};

// One input group of one layer (kScaleMigration).
struct MigrationGroup {
  int64_t layer = 0;
  std::string_view group;                     // "attn_in"
  std::span<const Tensor* const> consumers;   // dense float32 [out_k, in]
  const Format* format = nullptr;             // the first consumer's format
  std::string_view tensor_name;               // the first consumer's name, for messages
  const InputStats* stats = nullptr;          // of the group's input
  const float* importance = nullptr;          // per input column, or nullptr (no importance)
  const RangeChooser* range = nullptr;        // the weight range observer, or nullptr
};

struct Migration {
  std::vector<float> scales;      // folded into the producer; the consumers are multiplied by them
  std::vector<Tensor> weights;    // when not empty: the consumers' new weights (one per consumer)
  std::vector<float> importance;  // when not empty: the input's importance from now on
  EventValues event;
};

// One linear weight of one layer (kWeightQuantizer).
struct WeightTarget {
  int64_t layer = 0;
  std::string_view group;             // the input site ("attn_in")
  const Format* format = nullptr;
  std::string_view name;              // tensor name, for messages
  int64_t rows = 0, cols = 0;
  const float* weights = nullptr;     // dense float32 [rows, cols]
  const InputStats* stats = nullptr;  // of the weight's input
  const float* importance = nullptr;  // per input column, or nullptr
  const RangeChooser* range = nullptr;
};

struct QuantizedWeight {
  QuantizedTensor tensor;
  std::optional<EventValues> event;  // recorded when set
};

// One decoder layer after its weight quantizer (kLayerReconstruction). Hidden states are
// [samples · seq_len, hidden_size] float32, sample after sample.
struct ReconstructionLinear {
  model::TensorRole role = model::TensorRole::kAttnQ;  // one of kLayerLinearRoles
  const Format* format = nullptr;  // nullptr: kept float (not trained, not rewritten)
  std::string_view name;           // tensor name, for messages
};
struct LayerReconstructionTarget {
  int64_t layer = 0;
  const model::ModelConfig* config = nullptr;
  // The layer before its weight quantizer (after any scale migration: the same function as the
  // loaded layer), linears dense float32.
  const model::LayerWeights* original = nullptr;
  // The layer as the weight quantizer left it: linears with a format quantized in it.
  const model::LayerWeights* quantized = nullptr;
  std::span<const ReconstructionLinear> linears;  // the seven linears, kLayerLinearRoles order
  int64_t samples = 0, seq_len = 0;
  // The layer's input for every calibration sample: the already quantized layers' outputs.
  std::span<const float> inputs;
  // The full-precision layer's output on the full-precision model's input to it (the FP stream).
  std::span<const float> targets;
  const TrainingProgressFn* progress = nullptr;  // may be null
};

struct Reconstruction {
  // The linears to replace (role, new weight); empty: the layer stays as the weight quantizer left it.
  std::vector<std::pair<model::TensorRole, QuantizedTensor>> weights;
  EventValues event;
};

// The whole model after the layer pass (kModelReconstruction).
struct ModelReconstructionLinear {
  int64_t layer = 0;
  model::TensorRole role = model::TensorRole::kAttnQ;  // one of kLayerLinearRoles
  const Format* format = nullptr;  // nullptr: kept float (not trained)
  std::string_view name;
};
struct ModelReconstructionTarget {
  const model::Model* teacher = nullptr;    // the full-precision model (after any model transform and
                                            // scale migration: the loaded model's function)
  const model::Model* quantized = nullptr;  // every layer, the embedding and the head as quantized
  std::span<const ModelReconstructionLinear> linears;  // every layer's seven linears
  std::span<const std::vector<int32_t>> samples;       // calibration token sequences, equal lengths
  const TrainingProgressFn* progress = nullptr;        // may be null
};
struct ModelReconstruction {
  // The linears to replace: (layer, role, new weight); empty: the model stays as it was.
  struct Weight {
    int64_t layer = 0;
    model::TensorRole role = model::TensorRole::kAttnQ;
    QuantizedTensor tensor;
  };
  std::vector<Weight> weights;
  EventValues event;
};

// The memory a training method (kLayerReconstruction, kModelReconstruction) holds at its peak,
// for a preflight check (QuantizeJob::max_memory): grad::estimate_training_memory for the
// method's settings, plus what the method or the pipeline holds beside it (the teacher's dense
// weights and logits cache, the calibration streams), in bytes.
struct TrainingShape {
  int64_t samples = 0;  // calibration samples
  int64_t seq_len = 0;  // tokens per sample
  int64_t threads = 1;  // the pool's threads
};
struct TrainingMemory {
  grad::MemoryEstimate training;
  std::vector<std::pair<std::string, uint64_t>> extra;  // ("teacher cache", bytes), ...
  uint64_t total() const;
};
// A per-layer training step's estimate (qat-block, autoround): one layer trained at a time
// (grad::MemoryEstimateOptions::Scope::kOneLayer) with min(batch, samples) samples a step and
// `optimizer_values` floats per trained parameter, while the pipeline holds the calibration
// samples' quantized and full-precision streams.
TrainingMemory layer_training_memory(const model::ModelConfig& config, int64_t batch, int64_t optimizer_values,
                                     const TrainingShape& shape);
// A training step's event — a layer reconstruction's, or a model reconstruction's (qat-e2e, zeroqat) —
// (value 1: trained weights written, 0: the start kept because training
// did not lower the loss, −1: nothing to train) and its text, "<method> layer N: output mse A -> B,
// <written | kept | nothing>, T s; loss curve ...".
EventValues layer_training_event(bool trained, bool kept, double loss_start, double loss_trained,
                                 std::vector<double> curve);
// `start` names what a layer keeps when training did not help.
std::string layer_training_event_text(std::string_view method, std::string_view written, const MethodEvent& e,
                                      std::string_view start = "the weight quantizer's layer");

// One linear input of one layer (kActivation).
struct ActivationSite {
  int64_t layer = 0;
  std::string_view group;             // the input site ("attn_in")
  const InputStats* stats = nullptr;  // of that input (after any scale fold)
  float learned_clip = 0;             // a clip ratio a layer transform learned for it (0: none)
};

// One decoder layer before its weight quantizer (kLayerTransform): learned transforms of its
// input sites (FlatQuant). Streams as LayerReconstructionTarget's.
struct TransformSite {
  model::InputSite site = model::InputSite::kAttnIn;
  std::span<const model::TensorRole> consumers;  // the linears reading it, forward order
  bool foldable = false;              // per-channel scales may fold into its producer (fold.h)
  const InputStats* stats = nullptr;  // of its input (after any scale migration)
};
struct LayerTransformTarget {
  int64_t layer = 0;
  const model::ModelConfig* config = nullptr;
  const model::LayerWeights* weights = nullptr;   // dense float32, after any scale migration
  std::span<const ReconstructionLinear> linears;  // the seven linears, kLayerLinearRoles order
  std::span<const TransformSite> sites;           // the layer's input sites, forward order
  model::ActivationQuant activation;              // the recipe's activation scheme (kNone: none)
  int64_t samples = 0, seq_len = 0;
  std::span<const float> inputs;   // as LayerReconstructionTarget::inputs
  std::span<const float> targets;  // as LayerReconstructionTarget::targets
  const TrainingProgressFn* progress = nullptr;  // may be null
};

// A site's learned transform: the input x becomes x̃ = (x / s)·(A ⊗ B) (x viewed per token as an
// n1 × n2 matrix X: X̃ = Aᵀ·(X / s)·B), the consumers' weights W·diag(s)·(A ⊗ B)⁻ᵀ.
struct SiteTransform {
  model::InputSite site = model::InputSite::kAttnIn;
  std::vector<float> smoothing;  // s, folded into the producer (empty: none)
  int64_t n1 = 0, n2 = 0;
  std::vector<float> a, b;       // A [n1 × n1], B [n2 × n2], row-major
  float act_clip = 0;            // the learned per-token activation clip ratio (0: none learned)
};
struct LayerTransform {
  std::vector<SiteTransform> sites;  // empty: the layer stays as it was
  // Every consumer's new dense float32 weight, W·diag(s)·(A ⊗ B)⁻ᵀ (learned clipping applied).
  std::vector<std::pair<model::TensorRole, Tensor>> weights;
  EventValues event;
};

// One linear of one decoder layer after its weight quantizer (kErrorCompensation).
struct CompensationLinear {
  model::TensorRole role = model::TensorRole::kAttnQ;  // one of kLayerLinearRoles
  std::string_view name;                     // tensor name, for messages
  int64_t rows = 0, cols = 0;                // [out, in]
  const float* original = nullptr;           // dense float32 [rows, cols]: before the weight quantizer
  const model::LinearWeight* quantized = nullptr;  // as written (quantizer, then any reconstruction);
                                                   // nullptr: kept float (nothing to compensate)
  const InputStats* stats = nullptr;         // of its input (after any scale migration / transform)
};
struct LayerCompensationTarget {
  int64_t layer = 0;
  std::span<const CompensationLinear> linears;  // the seven linears, kLayerLinearRoles order
};
struct CompensationAdapter {
  model::TensorRole role = model::TensorRole::kAttnQ;
  model::LoraAdapter adapter;  // its in/out are the linear's cols/rows
  EventValues event;           // recorded per linear, target = its tensor name
};
struct LayerCompensation {
  std::vector<CompensationAdapter> adapters;  // at most one per role; empty: none for this layer
};

// ---- Methods ----

struct MethodTraits {
  std::string name;  // registry key, lower case: "gptq", "int8-tensor"
  MethodStage stage = MethodStage::kWeightQuantizer;
  std::string summary;    // one line for --help / docs
  calib::StatSet needs;   // statistics its hook reads
  // Options under which the step alone writes rtn's weight bytes; nullopt: no such setting.
  std::optional<nlohmann::json> identity;
};

class Method {
 public:
  virtual ~Method() = default;
  virtual const MethodTraits& traits() const = 0;
  const std::string& name() const { return traits().name; }
  MethodStage stage() const { return traits().stage; }

  virtual std::span<const OptionSpec> options() const = 0;
  // Parses a step's keys (a JSON object without "method"); Errors name `origin`, the method and the key.
  virtual StepOptions parse_options(const nlohmann::json& object, std::string_view origin) const = 0;
  // The keys the recipe gave (with_defaults: every key), as a JSON object.
  virtual nlohmann::json options_json(const StepOptions& options, bool with_defaults = false) const = 0;
  // The progress line of one of this method's events (no indentation, no newline).
  virtual std::string event_text(const MethodEvent& event) const;
  // Training methods: the memory estimate of a run with these options on a model of `config`
  // (TrainingShape); nullopt (the default) for the others.
  virtual std::optional<TrainingMemory> training_memory(const model::ModelConfig& config, const StepOptions& options,
                                                        const TrainingShape& shape) const;

  // Stage hooks: a method implements the one of its stage (the others assert).
  virtual void transform_model(model::Model& model, const StepOptions& options, ThreadPool& pool) const;
  virtual Migration migrate(const MigrationGroup& group, const StepOptions& options, ThreadPool& pool) const;
  virtual QuantizedWeight quantize(const WeightTarget& target, const StepOptions& options, ThreadPool& pool) const;
  virtual Reconstruction reconstruct(const LayerReconstructionTarget& target, const StepOptions& options,
                                     ThreadPool& pool) const;
  virtual LayerTransform transform_layer(const LayerTransformTarget& target, const StepOptions& options,
                                         ThreadPool& pool) const;
  virtual ModelReconstruction reconstruct_model(const ModelReconstructionTarget& target, const StepOptions& options,
                                                ThreadPool& pool) const;
  virtual LayerCompensation compensate(const LayerCompensationTarget& target, const StepOptions& options,
                                       ThreadPool& pool) const;
  virtual model::ActivationQuant activation(const ActivationSite& site, const StepOptions& options) const;
};

// ---- Registry ----
// All methods, in registration order (method_registry.cpp). Names are unique.
const std::vector<const Method*>& all_methods();
const Method* find_method(std::string_view name);  // nullptr when unknown
// Throws Error(kInvalidArgument) listing the known names when unknown.
const Method& method_by_name(std::string_view name);
// "rtn, gptq": the registered names of one stage, in registration order.
std::string method_names(MethodStage stage);
std::string method_names();  // all of them

using MethodList = std::vector<std::unique_ptr<Method>>;

}  // namespace calq::quant
