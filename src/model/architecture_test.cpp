#include "model/architecture.h"

#include <gtest/gtest.h>

namespace calq::model {
namespace {

TEST(Architecture, LlamaNamesRoundTrip) {
  const Architecture* arch = find_architecture("llama");
  ASSERT_NE(arch, nullptr);
  for (size_t r = 0; r < kNumTensorRoles; ++r) {
    const auto role = static_cast<TensorRole>(r);
    const int64_t layer = is_per_layer(role) ? 13 : -1;
    const std::string name = hf_tensor_name(*arch, role, layer);
    const auto parsed = parse_hf_tensor_name(*arch, name);
    ASSERT_TRUE(parsed.has_value()) << name;
    EXPECT_EQ(parsed->role, role) << name;
    EXPECT_EQ(parsed->layer, layer) << name;
  }
  EXPECT_EQ(hf_tensor_name(*arch, TensorRole::kMlpDown, 3), "model.layers.3.mlp.down_proj.weight");
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
}

}  // namespace
}  // namespace calq::model
