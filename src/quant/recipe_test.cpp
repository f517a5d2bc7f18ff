#include "quant/recipe.h"

#include <gtest/gtest.h>

#include <fstream>

#include "core/error.h"
#include "quant/gptq.h"
#include "support/error_of.h"

namespace calq::quant {
namespace {

using calq::testing::error_of;

TEST(Recipe, MethodChains) {
  EXPECT_EQ(parse_method_chain("gptq").to_string(), "gptq");
  EXPECT_EQ(parse_method_chain("awq").to_string(), "awq+rtn");  // a weight quantizer is appended
  EXPECT_EQ(parse_method_chain("rotate+awq+gptq").to_string(), "rotate+awq+gptq");
  // ... before the activation scheme.
  EXPECT_EQ(parse_method_chain("smoothquant+int8-tensor").to_string(), "smoothquant+rtn+int8-tensor");
  const Recipe r = parse_method_chain("awq+gptq");
  EXPECT_TRUE(r.has("awq"));
  EXPECT_FALSE(r.has("smoothquant"));
  EXPECT_EQ(r.weight_quantizer().name(), "gptq");
  EXPECT_EQ(r.activation(), nullptr);
  EXPECT_EQ(parse_method_chain("gptq+llm-int8").activation()->name(), "llm-int8");
}

TEST(Recipe, BadChains) {
  EXPECT_NE(error_of([] { parse_method_chain("gptq+awq"); }).find("after the weight quantizer"), std::string::npos);
  EXPECT_NE(error_of([] { parse_method_chain("rtn+gptq"); }).find("after the weight quantizer"), std::string::npos);
  EXPECT_NE(error_of([] { parse_method_chain("int8-token+gptq"); }).find("after the activation scheme"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_method_chain("int8-token+llm-int8"); }).find("after the activation scheme"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_method_chain("awq+awq"); }).find("twice"), std::string::npos);
  EXPECT_NE(error_of([] { parse_method_chain("awq+smoothquant"); }).find("one of them"), std::string::npos);
  EXPECT_NE(error_of([] { parse_method_chain("foo"); }).find("known: rotate"), std::string::npos);
  EXPECT_NE(error_of([] { parse_method_chain("awq++gptq"); }).find("empty method"), std::string::npos);
  EXPECT_NE(error_of([] { parse_method_chain(""); }).find("empty method"), std::string::npos);
}

TEST(Recipe, JsonRoundTripAndTypedOptions) {
  const nlohmann::json j = nlohmann::json::parse(
      R"({"steps": [{"method": "smoothquant", "alpha": 0.8}, {"method": "gptq", "act_order": true}]})");
  const Recipe r = recipe_from_json(j, "test");
  ASSERT_EQ(r.steps.size(), 2u);
  const GptqOptions& g = r.steps[1].options.get<GptqOptions>();
  EXPECT_TRUE(g.act_order);
  EXPECT_EQ(g.damp, 0.01);  // default
  EXPECT_EQ(g.block, 128);
  // Only the keys given are written back.
  EXPECT_EQ(r.to_json(), j);
  EXPECT_EQ(recipe_from_json(r.to_json(), "again").to_json(), j);
  EXPECT_TRUE(parse_method_chain("gptq").steps[0].options.empty());
  EXPECT_FALSE(r.steps[1].options.empty());
  // Whole-valued numbers for integer keys are integers.
  const Recipe b = recipe_from_json(nlohmann::json::parse(R"([{"method": "gptq", "block": 64.0}])"), "test");
  EXPECT_EQ(b.steps[0].options.get<GptqOptions>().block, 64);
  EXPECT_EQ(b.to_json()["steps"][0]["block"].dump(), "64");
}

TEST(Recipe, BadOptionsNameOriginMethodAndKey) {
  const auto err = [](const char* text) {
    return error_of([&] { recipe_from_json(nlohmann::json::parse(text), "r.json"); });
  };
  std::string e = err(R"([{"method": "smoothquant", "beta": 1}])");
  EXPECT_NE(e.find("r.json: method smoothquant has no option 'beta' (options: alpha)"), std::string::npos) << e;
  e = err(R"([{"method": "rtn", "beta": 1}])");
  EXPECT_NE(e.find("method rtn has no option 'beta' (it has no options)"), std::string::npos) << e;
  e = err(R"([{"method": "smoothquant", "alpha": 1.5}])");
  EXPECT_NE(e.find("r.json: method smoothquant option 'alpha' must be a number in [0, 1], got 1.5"), std::string::npos)
      << e;
  e = err(R"([{"method": "gptq", "act_order": 1}])");
  EXPECT_NE(e.find("option 'act_order' must be true or false"), std::string::npos) << e;
  e = err(R"([{"method": "gptq", "block": 12.5}])");
  EXPECT_NE(e.find("option 'block' must be an integer >= 1, got 12.5"), std::string::npos) << e;
  e = err(R"([{"method": "rotate", "seed": -1}])");
  EXPECT_NE(e.find("option 'seed' must be an integer >= 0, got -1"), std::string::npos) << e;
  e = err(R"([{"method": "llm-int8", "threshold": 0}])");
  EXPECT_NE(e.find("option 'threshold' must be a number > 0, got 0"), std::string::npos) << e;
  e = err(R"([{"method": "gptq", "damp": "high"}])");
  EXPECT_NE(e.find("option 'damp' must be a number >= 0, got \"high\""), std::string::npos) << e;
}

TEST(Recipe, SetOptionAndWithStep) {
  Recipe r = parse_method_chain("rotate+gptq");
  EXPECT_TRUE(r.set_option("rotate", "seed", uint64_t{7}));
  EXPECT_TRUE(r.set_option("gptq", "damp", 0.05));
  EXPECT_FALSE(r.set_option("awq", "grid", 10));
  EXPECT_EQ(r.steps[1].options.get<GptqOptions>().damp, 0.05);
  EXPECT_EQ(r.to_json().dump(),
            R"({"steps":[{"method":"rotate","seed":7},{"damp":0.05,"method":"gptq"}]})");
  EXPECT_NE(error_of([&] { r.set_option("gptq", "damp", -1); }).find("option 'damp'"), std::string::npos);
  EXPECT_NE(error_of([&] { r.set_option("gptq", "dump", 1); }).find("no option 'dump'"), std::string::npos);
  const Recipe a = with_step(parse_method_chain("smoothquant"), "llm-int8", {{"threshold", 4.5}});
  EXPECT_EQ(a.to_string(), "smoothquant+rtn+llm-int8");
  EXPECT_EQ(a.to_json()["steps"][2]["threshold"], 4.5);
  EXPECT_NE(error_of([&] { with_step(a, "int8-token", nlohmann::json::object()); }).find("activation scheme"),
            std::string::npos);
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
  std::ofstream(p) << R"([{"method": "awq", "grid": 0}])";
  EXPECT_NE(error_of([&] { read_recipe_file(p); }).find(p.string() + ": method awq option 'grid'"),
            std::string::npos);
  EXPECT_NE(error_of([&] { read_recipe_file(dir / "missing.json"); }).find("cannot open"), std::string::npos);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace calq::quant
