// finetune(job) -> report: LoRA adapters trained on a frozen base (QLoRA: the base quantized first,
// nf4-dq by default) on a text file split into a training part and a validation part.
//
// Steps: the text is split (`split`: WikiText articles — an article starts at a top-level heading
// line " = Title = ", sub-headings " = = Section = = " do not start one — the last `val_fraction`
// of the articles are the validation part; or `fraction`: the last val_fraction of the lines); each
// part is tokenized on its own with the model's tokenizer (no special tokens); with `reference`, the
// reference model's perplexity on the validation ids is measured (the same ids: the model's
// tokenizer); the model is loaded and, unless `format` is "none", its linear weights are rounded to
// `format` (round to nearest, no calibration: `quantize` with method rtn; the embedding and head
// take its default head format); the base's validation perplexity is measured; adapters are trained
// (quant/lora_finetune.h: PEFT's initialisation, AdamW with a cosine schedule after a warmup, the
// last step's adapters kept); the validation perplexity is measured again with them.
// Perplexities: protocol gptq-windows (calq/evaluate.h) with windows of `ctx` tokens, all windows
// of the validation part, through the runtime's forward (the quantized base and the adapters as
// `calq eval` runs them).
//
// Output (`out`, a folder; "" = report only): a PEFT adapter folder (model/peft_adapter.h:
// adapter_model.safetensors, adapter_config.json, calq_adapter.json whose base hash is base.gguf's
// when the base was quantized here, else the model's as given), `base.gguf` (the quantized base,
// when it was quantized here: `calq eval out/base.gguf --adapter out` runs the trained model) and
// `finetune.json` (the report's JSON), written into a temporary folder renamed to `out` at the end:
// an error or a cancellation leaves nothing. An existing `out` needs `force`, and is replaced only
// when it is empty or holds finetune.json or adapter_config.json.
//
// Memory: the model as loaded and quantized, plus the training's dense float copy of every base
// parameter (the gradient engine dequantizes the base), the adapters' gradients and AdamW state,
// and one batch's activations (quant/lora_finetune.h).
// Deterministic: the same job gives the same adapters and numbers for any thread count.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "calq/progress.h"

namespace calq {

struct FinetuneJob {
  std::string model;  // Hugging Face folder or GGUF file (any format)
  std::string text;   // the text file to train and validate on
  std::string split = "article";  // "article" or "fraction"
  double val_fraction = 0.5;       // share of the articles (lines) held out for validation
  std::string format = "nf4-dq";   // the base's format; "none": train on the model as loaded
  int64_t rank = 16;
  double alpha = 32;
  double dropout = 0;
  std::vector<std::string> targets = {"q", "k", "v", "o", "gate", "up", "down"};  // or PEFT's q_proj, ...; "all"
  double lr = 2e-4;
  double weight_decay = 0;
  double warmup = 0.03;        // fraction of the steps with a linear warmup
  double max_grad_norm = 1.0;  // 0: no clipping
  int64_t steps = 0;           // 0: `epochs` passes over the training windows
  int64_t epochs = 1;
  int64_t batch = 4;           // windows of ctx tokens per step
  int64_t ctx = 512;           // window length for training and perplexity
  int64_t eval_every = 0;      // validation loss every this many steps (0: before and after only)
  int64_t eval_windows = 16;   // windows of that validation loss (0: all); the perplexities use all
  uint64_t seed = 0;
  std::string reference;  // a model whose validation perplexity is reported beside ("" = none)
  std::string out;        // output folder ("" = report only)
  bool force = false;     // replace an existing `out`
  std::string json_out;   // also write the report's JSON here (atomically); "" = not
  size_t threads = 0;     // 0 = all cores
  ProgressFn progress;
};

struct FinetuneValidation {
  int64_t step = 0;  // steps taken (0: before training)
  double loss = 0, ppl = 0;
};

struct FinetuneReport {
  std::string model, text, split, format, reference;
  int64_t train_units = 0, validation_units = 0;  // articles or lines
  int64_t train_tokens = 0, validation_tokens = 0;
  int64_t rank = 0;
  double alpha = 0, dropout = 0, lr = 0;
  std::vector<std::string> targets;  // calq role names
  int64_t steps = 0, batch = 0, ctx = 0, tokens_trained = 0, adapter_parameters = 0;
  double bits_per_weight_base = 0;  // of the base as trained on (adapters not included)
  // Validation perplexities (gptq-windows, ctx, all windows of the validation part); 0 = not measured.
  int64_t ppl_windows = 0;
  double ppl_reference = 0, ppl_base = 0, ppl_trained = 0;
  std::vector<double> curve;                   // each step's training loss
  std::vector<FinetuneValidation> validation;  // the training's validation loss (eval_windows)
  double seconds_train = 0, seconds = 0, tokens_per_second = 0;
  double peak_rss_mib = 0;
  int threads = 0;
  std::vector<std::string> written;  // files written, under `out`
  std::string json;
};

FinetuneReport finetune(const FinetuneJob& job);

}  // namespace calq
