// Qwen2-MoE (Qwen2MoeForCausalLM): Qwen2's attention (q/k/v biases) and in every layer a sparse
// MoE MLP — router mlp.gate [num_experts, hidden], softmax over all experts, the top
// num_experts_per_tok kept (renormalised only when norm_topk_prob), experts mlp.experts.E.*
// [moe_intermediate_size] — plus a shared expert (mlp.shared_expert.*, a SwiGLU MLP of width
// shared_expert_intermediate_size, held in the dense kMlp* slots) whose output is scaled per token
// by sigmoid(mlp.shared_expert_gate · x). Layers must all be sparse (decoder_sparse_step 1, no
// mlp_only_layers), as llama.cpp requires. GGUF architecture "qwen2moe": expert tensors stacked,
// the shared expert as ffn_*_shexp, its gate as the 1-D ffn_gate_inp_shexp; llama.cpp never
// renormalises the picked weights for it.
#include <array>

#include "model/architecture.h"
#include "model/block_topology.h"

namespace calq::model {
namespace {

constexpr std::array<TensorSlot, 20> kSlots = {{
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
    {TensorRole::kMoeRouter, "model.layers.{}.mlp.gate.weight", "blk.{}.ffn_gate_inp.weight"},
    {TensorRole::kExpertGate, "model.layers.{}.mlp.experts.{}.gate_proj.weight", "blk.{}.ffn_gate_exps.weight"},
    {TensorRole::kExpertUp, "model.layers.{}.mlp.experts.{}.up_proj.weight", "blk.{}.ffn_up_exps.weight"},
    {TensorRole::kExpertDown, "model.layers.{}.mlp.experts.{}.down_proj.weight", "blk.{}.ffn_down_exps.weight"},
    {TensorRole::kMlpGate, "model.layers.{}.mlp.shared_expert.gate_proj.weight", "blk.{}.ffn_gate_shexp.weight"},
    {TensorRole::kMlpUp, "model.layers.{}.mlp.shared_expert.up_proj.weight", "blk.{}.ffn_up_shexp.weight"},
    {TensorRole::kMlpDown, "model.layers.{}.mlp.shared_expert.down_proj.weight", "blk.{}.ffn_down_shexp.weight"},
    {TensorRole::kSharedExpertGate, "model.layers.{}.mlp.shared_expert_gate.weight", "blk.{}.ffn_gate_inp_shexp.weight"},
    {TensorRole::kFinalNorm, "model.norm.weight", "output_norm.weight"},
    {TensorRole::kOutput, "lm_head.weight", "output.weight", /*optional=*/true},
}};

constexpr std::array<std::string_view, 1> kRefusedTrueKeys = {"mlp_bias"};

constexpr MoeRule kMoe{
    .num_experts_key = "num_experts",
    .expert_width_key = "moe_intermediate_size",
    .shared_expert = true,
    .norm_topk_default = false,
    .has_norm_topk_key = true,
    .gguf_norm_topk = false,
    .gguf_ffn_is_expert_width = false,
};

constexpr Architecture kQwen2Moe{
    .model_type = "qwen2_moe",
    .slots = kSlots,
    .window_rule = WindowRule::kQwen2Layers,
    .refused_true_keys = kRefusedTrueKeys,
    .gguf_arch = "qwen2moe",
    .gguf_reads_as_this = true,
    .gguf_permutes_qk = false,
    .gguf_window_all_layers = false,
    .gguf_output_required = true,
    .block = &kMoeSharedBlock,
    .moe = &kMoe,
};

}  // namespace

const Architecture& qwen2_moe_architecture() { return kQwen2Moe; }

}  // namespace calq::model
