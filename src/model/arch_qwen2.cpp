// Qwen2 (Qwen2ForCausalLM): Llama's layout plus biases on the q/k/v projections (always present;
// o_proj has none). A sliding window applies only when `use_sliding_window` is true, and then
// only to layers >= `max_window_layers` (or as `layer_types` lists). llama.cpp's converter
// writes GGUF architecture "qwen2" and does not permute Q/K (llama.cpp runs Qwen2 with the NeoX
// rotary layout, which is Hugging Face's rotate_half).
#include <array>

#include "model/architecture.h"
#include "model/block_topology.h"

namespace calq::model {
namespace {

constexpr std::array<TensorSlot, 15> kSlots = {{
    {TensorRole::kTokenEmbedding, "model.embed_tokens.weight", "token_embd.weight"},
    {TensorRole::kAttnNorm, "model.layers.{}.input_layernorm.weight", "blk.{}.attn_norm.weight"},
    {TensorRole::kAttnQ, "model.layers.{}.self_attn.q_proj.weight", "blk.{}.attn_q.weight"},
    {TensorRole::kAttnK, "model.layers.{}.self_attn.k_proj.weight", "blk.{}.attn_k.weight"},
    {TensorRole::kAttnV, "model.layers.{}.self_attn.v_proj.weight", "blk.{}.attn_v.weight"},
    {TensorRole::kAttnQBias, "model.layers.{}.self_attn.q_proj.bias", "blk.{}.attn_q.bias"},
    {TensorRole::kAttnKBias, "model.layers.{}.self_attn.k_proj.bias", "blk.{}.attn_k.bias"},
    {TensorRole::kAttnVBias, "model.layers.{}.self_attn.v_proj.bias", "blk.{}.attn_v.bias"},
    {TensorRole::kAttnOut, "model.layers.{}.self_attn.o_proj.weight", "blk.{}.attn_output.weight"},
    {TensorRole::kMlpNorm, "model.layers.{}.post_attention_layernorm.weight", "blk.{}.ffn_norm.weight"},
    {TensorRole::kMlpGate, "model.layers.{}.mlp.gate_proj.weight", "blk.{}.ffn_gate.weight"},
    {TensorRole::kMlpUp, "model.layers.{}.mlp.up_proj.weight", "blk.{}.ffn_up.weight"},
    {TensorRole::kMlpDown, "model.layers.{}.mlp.down_proj.weight", "blk.{}.ffn_down.weight"},
    {TensorRole::kFinalNorm, "model.norm.weight", "output_norm.weight"},
    {TensorRole::kOutput, "lm_head.weight", "output.weight", /*optional=*/true},
}};

constexpr std::array<std::string_view, 1> kRefusedTrueKeys = {"mlp_bias"};

constexpr Architecture kQwen2{
    .model_type = "qwen2",
    .slots = kSlots,
    .window_rule = WindowRule::kQwen2Layers,
    .refused_true_keys = kRefusedTrueKeys,
    .gguf_arch = "qwen2",
    .gguf_reads_as_this = true,
    .gguf_permutes_qk = false,
    // llama.cpp's converter writes no window for Qwen2 and its config rule (max_window_layers)
    // has no GGUF key, so a window key in a qwen2 file is refused rather than guessed at.
    .gguf_window_all_layers = false,
    .block = &kLlamaBlock,
};

}  // namespace

const Architecture& qwen2_architecture() { return kQwen2; }

}  // namespace calq::model
