#include "quant/recipe.h"

#include <gtest/gtest.h>

#include <fstream>

#include "core/error.h"
#include "support/error_of.h"

namespace calq::quant {
namespace {

using calq::testing::error_of;

TEST(Recipe, MethodChains) {
  EXPECT_EQ(parse_method_chain("gptq").to_string(), "gptq");
  EXPECT_EQ(parse_method_chain("awq").to_string(), "awq+rtn");  // a weight quantizer is appended
  EXPECT_EQ(parse_method_chain("rotate+awq+gptq").to_string(), "rotate+awq+gptq");
  const Recipe r = parse_method_chain("awq+gptq");
  EXPECT_TRUE(r.has("awq"));
  EXPECT_FALSE(r.has("smoothquant"));
  EXPECT_EQ(r.weight_quantizer().method, "gptq");
}

TEST(Recipe, BadChains) {
  EXPECT_NE(error_of([] { parse_method_chain("gptq+awq"); }).find("after the weight quantizer"), std::string::npos);
  EXPECT_NE(error_of([] { parse_method_chain("rtn+gptq"); }).find("after the weight quantizer"), std::string::npos);
  EXPECT_NE(error_of([] { parse_method_chain("awq+awq"); }).find("twice"), std::string::npos);
  EXPECT_NE(error_of([] { parse_method_chain("awq+smoothquant"); }).find("one of them"), std::string::npos);
  EXPECT_NE(error_of([] { parse_method_chain("foo"); }).find("known: rotate"), std::string::npos);
  EXPECT_NE(error_of([] { parse_method_chain("awq++gptq"); }).find("empty method"), std::string::npos);
  EXPECT_NE(error_of([] { parse_method_chain(""); }).find("empty method"), std::string::npos);
}

TEST(Recipe, JsonRoundTripAndOptions) {
  const nlohmann::json j = nlohmann::json::parse(
      R"({"steps": [{"method": "smoothquant", "alpha": 0.8}, {"method": "gptq", "act_order": true}]})");
  const Recipe r = recipe_from_json(j, "test");
  ASSERT_EQ(r.steps.size(), 2u);
  EXPECT_DOUBLE_EQ(step_number(r.steps[0], r, "alpha", 0.5), 0.8);
  EXPECT_DOUBLE_EQ(step_number(r.steps[1], r, "damp", 0.01), 0.01);  // default
  EXPECT_TRUE(step_bool(r.steps[1], r, "act_order", false));
  EXPECT_EQ(recipe_from_json(r.to_json(), "again").to_json(), r.to_json());
  EXPECT_NE(error_of([&] { step_bool(r.steps[0], r, "alpha", false); }).find("must be true or false"),
            std::string::npos);
  EXPECT_NE(error_of([&] { check_step_keys(r.steps[0], r, {"beta"}); }).find("no option 'alpha'"),
            std::string::npos);
  EXPECT_NO_THROW(check_step_keys(r.steps[0], r, {"alpha"}));
}

TEST(Recipe, BadFiles) {
  const auto dir = std::filesystem::temp_directory_path() / "calq_recipe_test";
  std::filesystem::create_directories(dir);
  const auto p = dir / "r.json";
  std::ofstream(p) << "{not json";
  EXPECT_NE(error_of([&] { read_recipe_file(p); }).find("not valid JSON"), std::string::npos);
  std::ofstream(p) << R"({"stages": []})";
  EXPECT_NE(error_of([&] { read_recipe_file(p); }).find("steps"), std::string::npos);
  std::ofstream(p) << R"([{"alpha": 1}])";
  EXPECT_NE(error_of([&] { read_recipe_file(p); }).find("string \"method\""), std::string::npos);
  std::ofstream(p) << R"([])";
  EXPECT_NE(error_of([&] { read_recipe_file(p); }).find("no method steps"), std::string::npos);
  EXPECT_NE(error_of([&] { read_recipe_file(dir / "missing.json"); }).find("cannot open"), std::string::npos);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace calq::quant
