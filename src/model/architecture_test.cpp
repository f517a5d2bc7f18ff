#include "model/architecture.h"

#include <gtest/gtest.h>

namespace calq::model {
namespace {

TEST(Architecture, LlamaNamesRoundTrip) {
  const Architecture* arch = find_architecture("llama");
  ASSERT_NE(arch, nullptr);
  for (size_t r = 0; r < kNumTensorRoles; ++r) {
    const auto role = static_cast<TensorRole>(r);
    if (!has_slot(*arch, role)) continue;  // biases, head norms, experts
    const int64_t layer = is_per_layer(role) ? 13 : -1;
    const std::string name = hf_tensor_name(*arch, role, layer);
    const auto parsed = parse_hf_tensor_name(*arch, name);
    ASSERT_TRUE(parsed.has_value()) << name;
    EXPECT_EQ(parsed->role, role) << name;
    EXPECT_EQ(parsed->layer, layer) << name;
  }
  EXPECT_EQ(hf_tensor_name(*arch, TensorRole::kMlpDown, 3), "model.layers.3.mlp.down_proj.weight");
}

TEST(Architecture, EveryTableRoundTripsHfAndGgufNames) {
  for (const auto& type : supported_model_types()) {
    const Architecture* arch = find_architecture(type);
    ASSERT_NE(arch, nullptr) << type;
    for (const auto& slot : arch->slots) {
      const int64_t layer = is_per_layer(slot.role) ? 7 : -1;
      const int64_t expert = is_expert(slot.role) ? 12 : -1;
      for (const bool gguf : {false, true}) {
        const std::string name =
            gguf ? gguf_tensor_name(*arch, slot.role, layer) : hf_tensor_name(*arch, slot.role, layer, expert);
        const auto parsed = gguf ? parse_gguf_tensor_name(*arch, name) : parse_hf_tensor_name(*arch, name);
        ASSERT_TRUE(parsed.has_value()) << type << " " << name;
        EXPECT_EQ(parsed->role, slot.role) << name;
        EXPECT_EQ(parsed->layer, layer) << name;
        EXPECT_EQ(parsed->expert, gguf ? -1 : expert) << name;  // GGUF stacks a layer's experts
      }
    }
    // Every table has the attention and norms; a MoE table the router and every expert role, a
    // dense one the MLP.
    for (size_t r = 0; r < kNumTensorRoles; ++r) {
      const auto role = static_cast<TensorRole>(r);
      if (is_bias(role) || is_head_norm(role) || role == TensorRole::kSharedExpertGate) continue;
      const bool moe_role = role == TensorRole::kMoeRouter || is_expert(role);
      const bool dense_mlp = role == TensorRole::kMlpGate || role == TensorRole::kMlpUp || role == TensorRole::kMlpDown;
      if (moe_role) {
        EXPECT_EQ(has_slot(*arch, role), arch->moe != nullptr) << type << " " << role_name(role);
      } else if (dense_mlp) {
        EXPECT_EQ(has_slot(*arch, role), arch->moe == nullptr || arch->moe->shared_expert) << type << " "
                                                                                             << role_name(role);
      } else {
        EXPECT_TRUE(has_slot(*arch, role)) << type << " " << role_name(role);
      }
    }
    EXPECT_EQ(has_slot(*arch, TensorRole::kSharedExpertGate), arch->moe != nullptr && arch->moe->shared_expert);
    EXPECT_EQ(has_slot(*arch, TensorRole::kAttnQNorm), has_slot(*arch, TensorRole::kAttnKNorm));
  }
}

TEST(Architecture, TablesDifferWhereTheModelsDo) {
  const Architecture& llama = *find_architecture("llama");
  const Architecture& mistral = *find_architecture("mistral");
  const Architecture& qwen2 = *find_architecture("qwen2");
  EXPECT_EQ(supported_model_types(), (std::vector<std::string>{"llama", "mistral", "qwen2", "qwen3", "mixtral",
                                                                "qwen2_moe", "qwen3_moe"}));
  EXPECT_FALSE(has_slot(llama, TensorRole::kAttnQBias));
  EXPECT_FALSE(has_slot(mistral, TensorRole::kAttnVBias));
  EXPECT_EQ(hf_tensor_name(qwen2, TensorRole::kAttnKBias, 2), "model.layers.2.self_attn.k_proj.bias");
  EXPECT_EQ(gguf_tensor_name(qwen2, TensorRole::kAttnKBias, 2), "blk.2.attn_k.bias");
  EXPECT_EQ(gguf_tensor_name(llama, TensorRole::kMlpDown, 0), "blk.0.ffn_down.weight");
  EXPECT_EQ(gguf_tensor_name(llama, TensorRole::kOutput, -1), "output.weight");
  EXPECT_EQ(llama.window_rule, WindowRule::kNone);
  EXPECT_EQ(mistral.window_rule, WindowRule::kAllLayers);
  EXPECT_EQ(qwen2.window_rule, WindowRule::kQwen2Layers);
  // llama.cpp's converter: llama and mistral (written as "llama") permute Q/K; qwen2 does not.
  EXPECT_TRUE(llama.gguf_permutes_qk);
  EXPECT_TRUE(mistral.gguf_permutes_qk);
  EXPECT_FALSE(qwen2.gguf_permutes_qk);
  EXPECT_EQ(find_gguf_architecture("llama"), &llama);
  EXPECT_EQ(find_gguf_architecture("qwen2"), &qwen2);
  EXPECT_EQ(find_gguf_architecture("mistral"), nullptr);
  EXPECT_EQ(supported_gguf_architectures(),
            (std::vector<std::string>{"llama", "qwen2", "qwen3", "qwen2moe", "qwen3moe"}));
  // Mixtral is written as "llama" (with experts); it does not claim the name when reading.
  const Architecture& mixtral = *find_architecture("mixtral");
  EXPECT_EQ(mixtral.gguf_arch, "llama");
  EXPECT_TRUE(mixtral.gguf_permutes_qk);
  EXPECT_EQ(hf_tensor_name(mixtral, TensorRole::kExpertDown, 3, 5), "model.layers.3.block_sparse_moe.experts.5.w2.weight");
  const Architecture& qwen2_moe = *find_architecture("qwen2_moe");
  EXPECT_EQ(gguf_tensor_name(qwen2_moe, TensorRole::kMlpUp, 1), "blk.1.ffn_up_shexp.weight");
  EXPECT_EQ(gguf_tensor_name(qwen2_moe, TensorRole::kExpertUp, 1), "blk.1.ffn_up_exps.weight");
  const auto parsed = parse_hf_tensor_name(qwen2_moe, "model.layers.10.mlp.experts.59.down_proj.weight");
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(parsed->role, TensorRole::kExpertDown);
  EXPECT_EQ(parsed->layer, 10);
  EXPECT_EQ(parsed->expert, 59);
  EXPECT_FALSE(parse_hf_tensor_name(qwen2_moe, "model.layers.10.mlp.experts.x.down_proj.weight").has_value());
  EXPECT_FALSE(parse_hf_tensor_name(qwen2_moe, "model.layers.10.mlp.experts.3.down_proj.bias").has_value());
}

TEST(Architecture, RejectsForeignNames) {
  const Architecture* arch = find_architecture("llama");
  EXPECT_FALSE(parse_hf_tensor_name(*arch, "model.layers.x.mlp.down_proj.weight").has_value());
  EXPECT_FALSE(parse_hf_tensor_name(*arch, "model.layers.1.mlp.down_proj.bias").has_value());
  EXPECT_FALSE(parse_hf_tensor_name(*arch, "transformer.h.0.attn.c_attn.weight").has_value());
  EXPECT_EQ(find_architecture("bloom"), nullptr);
}

TEST(Architecture, RoleKinds) {
  EXPECT_TRUE(is_linear(TensorRole::kAttnQ));
  EXPECT_TRUE(is_linear(TensorRole::kOutput));
  EXPECT_FALSE(is_linear(TensorRole::kAttnNorm));
  EXPECT_FALSE(is_linear(TensorRole::kTokenEmbedding));
  EXPECT_FALSE(is_per_layer(TensorRole::kOutput));
  EXPECT_TRUE(is_per_layer(TensorRole::kMlpNorm));
  EXPECT_TRUE(is_per_layer(TensorRole::kAttnQBias));
  EXPECT_FALSE(is_linear(TensorRole::kAttnQBias));
  EXPECT_TRUE(is_bias(TensorRole::kAttnVBias));
  EXPECT_FALSE(is_bias(TensorRole::kAttnV));
  EXPECT_EQ(bias_target(TensorRole::kAttnKBias), TensorRole::kAttnK);
  EXPECT_EQ(role_name(TensorRole::kAttnQBias), "attn_q_bias");
}

}  // namespace
}  // namespace calq::model
