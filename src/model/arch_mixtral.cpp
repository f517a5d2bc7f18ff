// Mixtral (MixtralForCausalLM): Llama's attention (Mistral's sliding-window rule) and a sparse
// mixture-of-experts MLP in every layer: the router block_sparse_moe.gate [num_local_experts,
// hidden] picks num_experts_per_tok experts per token by softmax over its logits, the picked
// probabilities renormalised to sum to 1; expert e is SwiGLU with w1 = gate, w3 = up, w2 = down
// [intermediate_size = the expert width]. llama.cpp's converter writes it as GGUF architecture
// "llama" (Q/K permuted like Llama) with llama.expert_count / expert_used_count and the experts
// stacked per layer as ffn_{gate,up,down}_exps; such a file reads as this table.
#include <array>

#include "model/architecture.h"
#include "model/block_topology.h"

namespace calq::model {
namespace {

constexpr std::array<TensorSlot, 13> kSlots = {{
    {TensorRole::kTokenEmbedding, "model.embed_tokens.weight", "token_embd.weight"},
    {TensorRole::kAttnNorm, "model.layers.{}.input_layernorm.weight", "blk.{}.attn_norm.weight"},
    {TensorRole::kAttnQ, "model.layers.{}.self_attn.q_proj.weight", "blk.{}.attn_q.weight"},
    {TensorRole::kAttnK, "model.layers.{}.self_attn.k_proj.weight", "blk.{}.attn_k.weight"},
    {TensorRole::kAttnV, "model.layers.{}.self_attn.v_proj.weight", "blk.{}.attn_v.weight"},
    {TensorRole::kAttnOut, "model.layers.{}.self_attn.o_proj.weight", "blk.{}.attn_output.weight"},
    {TensorRole::kMlpNorm, "model.layers.{}.post_attention_layernorm.weight", "blk.{}.ffn_norm.weight"},
    {TensorRole::kMoeRouter, "model.layers.{}.block_sparse_moe.gate.weight", "blk.{}.ffn_gate_inp.weight"},
    {TensorRole::kExpertGate, "model.layers.{}.block_sparse_moe.experts.{}.w1.weight", "blk.{}.ffn_gate_exps.weight"},
    {TensorRole::kExpertUp, "model.layers.{}.block_sparse_moe.experts.{}.w3.weight", "blk.{}.ffn_up_exps.weight"},
    {TensorRole::kExpertDown, "model.layers.{}.block_sparse_moe.experts.{}.w2.weight", "blk.{}.ffn_down_exps.weight"},
    {TensorRole::kFinalNorm, "model.norm.weight", "output_norm.weight"},
    {TensorRole::kOutput, "lm_head.weight", "output.weight", /*optional=*/true},
}};

constexpr MoeRule kMoe{
    .num_experts_key = "num_local_experts",
    .expert_width_key = "intermediate_size",
    .shared_expert = false,
    .norm_topk_default = true,
    .has_norm_topk_key = false,
    .gguf_norm_topk = true,
    .gguf_ffn_is_expert_width = true,
};

constexpr Architecture kMixtral{
    .model_type = "mixtral",
    .slots = kSlots,
    .window_rule = WindowRule::kAllLayers,
    .refused_true_keys = {},
    .gguf_arch = "llama",
    // A "llama" file with experts reads as this table (gguf_model.cpp), one without as Llama's.
    .gguf_reads_as_this = false,
    .gguf_permutes_qk = true,
    .gguf_window_all_layers = true,
    .block = &kMoeBlock,
    .moe = &kMoe,
};

}  // namespace

const Architecture& mixtral_architecture() { return kMixtral; }

}  // namespace calq::model
