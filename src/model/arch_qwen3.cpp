// Qwen3 (Qwen3ForCausalLM): Llama's layout plus an RMSNorm over each query and key head
// (self_attn.q_norm / k_norm, weight [head_dim], applied after the projection and before the
// rotary embedding). No q/k/v biases (`attention_bias` true is refused). The sliding-window rule
// is Qwen2's. llama.cpp's converter writes GGUF architecture "qwen3", NeoX rotary layout (no Q/K
// permutation), the head norms as attn_q_norm / attn_k_norm.
#include <array>

#include "model/architecture.h"
#include "model/block_topology.h"

namespace calq::model {
namespace {

constexpr std::array<TensorSlot, 14> kSlots = {{
    {TensorRole::kTokenEmbedding, "model.embed_tokens.weight", "token_embd.weight"},
    {TensorRole::kAttnNorm, "model.layers.{}.input_layernorm.weight", "blk.{}.attn_norm.weight"},
    {TensorRole::kAttnQ, "model.layers.{}.self_attn.q_proj.weight", "blk.{}.attn_q.weight"},
    {TensorRole::kAttnK, "model.layers.{}.self_attn.k_proj.weight", "blk.{}.attn_k.weight"},
    {TensorRole::kAttnV, "model.layers.{}.self_attn.v_proj.weight", "blk.{}.attn_v.weight"},
    {TensorRole::kAttnQNorm, "model.layers.{}.self_attn.q_norm.weight", "blk.{}.attn_q_norm.weight"},
    {TensorRole::kAttnKNorm, "model.layers.{}.self_attn.k_norm.weight", "blk.{}.attn_k_norm.weight"},
    {TensorRole::kAttnOut, "model.layers.{}.self_attn.o_proj.weight", "blk.{}.attn_output.weight"},
    {TensorRole::kMlpNorm, "model.layers.{}.post_attention_layernorm.weight", "blk.{}.ffn_norm.weight"},
    {TensorRole::kMlpGate, "model.layers.{}.mlp.gate_proj.weight", "blk.{}.ffn_gate.weight"},
    {TensorRole::kMlpUp, "model.layers.{}.mlp.up_proj.weight", "blk.{}.ffn_up.weight"},
    {TensorRole::kMlpDown, "model.layers.{}.mlp.down_proj.weight", "blk.{}.ffn_down.weight"},
    {TensorRole::kFinalNorm, "model.norm.weight", "output_norm.weight"},
    {TensorRole::kOutput, "lm_head.weight", "output.weight", /*optional=*/true},
}};

constexpr std::array<std::string_view, 2> kRefusedTrueKeys = {"attention_bias", "mlp_bias"};

constexpr Architecture kQwen3{
    .model_type = "qwen3",
    .slots = kSlots,
    .window_rule = WindowRule::kQwen2Layers,
    .refused_true_keys = kRefusedTrueKeys,
    .gguf_arch = "qwen3",
    .gguf_reads_as_this = true,
    .gguf_permutes_qk = false,
    .gguf_window_all_layers = false,
    .block = &kLlamaBlock,
};

}  // namespace

const Architecture& qwen3_architecture() { return kQwen3; }

}  // namespace calq::model
