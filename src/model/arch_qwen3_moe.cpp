// Qwen3-MoE (Qwen3MoeForCausalLM): Qwen3's attention (per-head q/k RMSNorm, no biases) and in
// every layer a sparse MoE MLP like Qwen2-MoE's without the shared expert: router mlp.gate,
// softmax, top num_experts_per_tok, renormalised when norm_topk_prob (default false in the
// config class; the released models set it true, and llama.cpp always renormalises for
// "qwen3moe", so a config with it false cannot be written to GGUF). Layers must all be sparse.
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
    {TensorRole::kAttnQNorm, "model.layers.{}.self_attn.q_norm.weight", "blk.{}.attn_q_norm.weight"},
    {TensorRole::kAttnKNorm, "model.layers.{}.self_attn.k_norm.weight", "blk.{}.attn_k_norm.weight"},
    {TensorRole::kAttnOut, "model.layers.{}.self_attn.o_proj.weight", "blk.{}.attn_output.weight"},
    {TensorRole::kMlpNorm, "model.layers.{}.post_attention_layernorm.weight", "blk.{}.ffn_norm.weight"},
    {TensorRole::kMoeRouter, "model.layers.{}.mlp.gate.weight", "blk.{}.ffn_gate_inp.weight"},
    {TensorRole::kExpertGate, "model.layers.{}.mlp.experts.{}.gate_proj.weight", "blk.{}.ffn_gate_exps.weight"},
    {TensorRole::kExpertUp, "model.layers.{}.mlp.experts.{}.up_proj.weight", "blk.{}.ffn_up_exps.weight"},
    {TensorRole::kExpertDown, "model.layers.{}.mlp.experts.{}.down_proj.weight", "blk.{}.ffn_down_exps.weight"},
    {TensorRole::kFinalNorm, "model.norm.weight", "output_norm.weight"},
    {TensorRole::kOutput, "lm_head.weight", "output.weight", /*optional=*/true},
}};

constexpr std::array<std::string_view, 2> kRefusedTrueKeys = {"attention_bias", "mlp_bias"};

constexpr MoeRule kMoe{
    .num_experts_key = "num_experts",
    .expert_width_key = "moe_intermediate_size",
    .shared_expert = false,
    .norm_topk_default = false,
    .has_norm_topk_key = true,
    .gguf_norm_topk = true,
    .gguf_ffn_is_expert_width = false,
};

constexpr Architecture kQwen3Moe{
    .model_type = "qwen3_moe",
    .slots = kSlots,
    .window_rule = WindowRule::kQwen2Layers,
    .refused_true_keys = kRefusedTrueKeys,
    .gguf_arch = "qwen3moe",
    .gguf_reads_as_this = true,
    .gguf_permutes_qk = false,
    .gguf_window_all_layers = false,
    .block = &kMoeBlock,
    .moe = &kMoe,
};

}  // namespace

const Architecture& qwen3_moe_architecture() { return kQwen3Moe; }

}  // namespace calq::model
