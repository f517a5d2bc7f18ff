// Llama (LlamaForCausalLM): the reference layout. llama.cpp's converter writes it as GGUF
// architecture "llama" and permutes the rows of q_proj/k_proj for its interleaved rotary
// embedding (LlamaModel.permute in convert_hf_to_gguf.py).
#include <array>

#include "model/architecture.h"
#include "model/block_topology.h"

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

// Llama with biases (o_proj too) or MLP biases is a different layout; calq refuses it.
constexpr std::array<std::string_view, 2> kRefusedTrueKeys = {"attention_bias", "mlp_bias"};

constexpr Architecture kLlama{
    .model_type = "llama",
    .slots = kSlots,
    .window_rule = WindowRule::kNone,
    .refused_true_keys = kRefusedTrueKeys,
    .gguf_arch = "llama",
    .gguf_reads_as_this = true,
    .gguf_permutes_qk = true,
    // Mistral files are written as "llama"; calq's own writer puts Mistral's window here.
    .gguf_window_all_layers = true,
    .block = &kLlamaBlock,
};

}  // namespace

const Architecture& llama_architecture() { return kLlama; }

}  // namespace calq::model
