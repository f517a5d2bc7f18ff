// Mistral (MistralForCausalLM): Llama's tensor layout; `sliding_window` (null = none) limits every
// layer's attention to the last W positions. llama.cpp's converter writes it as GGUF architecture
// "llama" with the Llama Q/K permutation, so a Mistral GGUF loads through the llama table.
#include <array>

#include "model/architecture.h"

namespace calq::model {
namespace {

constexpr std::array<TensorSlot, 12> kSlots = {{
    {TensorRole::kTokenEmbedding, "model.embed_tokens.weight", "token_embd.weight"},
    {TensorRole::kAttnNorm, "model.layers.{}.input_layernorm.weight", "blk.{}.attn_norm.weight"},
    {TensorRole::kAttnQ, "model.layers.{}.self_attn.q_proj.weight", "blk.{}.attn_q.weight"},
    {TensorRole::kAttnK, "model.layers.{}.self_attn.k_proj.weight", "blk.{}.attn_k.weight"},
    {TensorRole::kAttnV, "model.layers.{}.self_attn.v_proj.weight", "blk.{}.attn_v.weight"},
    {TensorRole::kAttnOut, "model.layers.{}.self_attn.o_proj.weight", "blk.{}.attn_output.weight"},
    {TensorRole::kMlpNorm, "model.layers.{}.post_attention_layernorm.weight", "blk.{}.ffn_norm.weight"},
    {TensorRole::kMlpGate, "model.layers.{}.mlp.gate_proj.weight", "blk.{}.ffn_gate.weight"},
    {TensorRole::kMlpUp, "model.layers.{}.mlp.up_proj.weight", "blk.{}.ffn_up.weight"},
    {TensorRole::kMlpDown, "model.layers.{}.mlp.down_proj.weight", "blk.{}.ffn_down.weight"},
    {TensorRole::kFinalNorm, "model.norm.weight", "output_norm.weight"},
    {TensorRole::kOutput, "lm_head.weight", "output.weight", /*optional=*/true},
}};

constexpr std::array<std::string_view, 2> kRefusedTrueKeys = {"attention_bias", "mlp_bias"};

constexpr Architecture kMistral{
    .model_type = "mistral",
    .slots = kSlots,
    .window_rule = WindowRule::kAllLayers,
    .refused_true_keys = kRefusedTrueKeys,
    .gguf_arch = "llama",
    .gguf_reads_as_this = false,
    .gguf_permutes_qk = true,
    .gguf_window_all_layers = true,
};

}  // namespace

const Architecture& mistral_architecture() { return kMistral; }

}  // namespace calq::model
