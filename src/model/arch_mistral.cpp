// Mistral (MistralForCausalLM): Llama's tensor layout; `sliding_window` (null = none) limits every
// layer's attention to the last W positions. llama.cpp's converter writes it as GGUF architecture
// "llama" with the Llama Q/K permutation, so a Mistral GGUF loads through the llama table.
#include "model/architecture.h"
#include "model/block_topology.h"

namespace calq::model {

const Architecture& mistral_architecture() {
  // Same tensors, names and refused layouts as Llama: Llama's tables.
  static const Architecture kMistral{
      .model_type = "mistral",
      .slots = llama_architecture().slots,
      .window_rule = WindowRule::kAllLayers,
      .refused_true_keys = llama_architecture().refused_true_keys,
      .gguf_arch = "llama",
      .gguf_reads_as_this = false,
      .gguf_permutes_qk = true,
      .gguf_window_all_layers = true,
      .block = &kLlamaBlock,
  };
  return kMistral;
}

}  // namespace calq::model
