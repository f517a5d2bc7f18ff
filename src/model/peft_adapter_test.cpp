// PEFT adapter folders: the tensor names, shapes and adapter_config.json keys PEFT documents
// (hard-coded below: they are the spec), write/read round trip, and every bad input an error with
// nothing written or installed.
#include "model/peft_adapter.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/mapped_file.h"
#include "io/safetensors.h"
#include "model/forward.h"
#include "model/tiny_model_testutil.h"
#include "support/error_of.h"
#include "support/shared_dir.h"

namespace calq::model {
namespace {

using calq::testing::error_of;
using nlohmann::json;
namespace fs = std::filesystem;

const std::string kHash = std::string(64, 'a');

Tensor random_tensor(const Shape& shape, uint32_t seed) {
  Tensor t = Tensor::zeros(DType::kF32, shape);
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 0.2f);
  for (int64_t i = 0; i < t.numel(); ++i) t.mutable_f32()[i] = d(rng);
  return t;
}

void set_adapter(Model& m, int64_t layer, TensorRole role, int64_t rank, double alpha, uint32_t seed) {
  LayerWeights& l = m.layers[static_cast<size_t>(layer)];
  const LinearWeight& w = l.linear(role);
  l.adapter_slot(role) = LoraAdapter::make(random_tensor({rank, w.cols()}, seed), random_tensor({w.rows(), rank}, seed + 1),
                                           alpha, w.cols(), w.rows(), "test");
}

PeftWriteOptions write_options() {
  return {.provenance = {.base_model_sha256 = kHash, .base_model_path = "/models/tiny", .calq_version = "0.1.0"}};
}

json read_json(const fs::path& p) { return json::parse(read_text_file(p)); }

struct Fixture {
  ThreadPool pool{2};
  fs::path dir;
  Model base;  // no adapters
  Model adapted;

  explicit Fixture(const std::string& tag, const std::string& model_type = "llama") {
    dir = testing::temp_dir(tag);
    base = testutil::load_tiny_model(dir / "model", {.tied = false, .model_type = model_type}, pool);
    adapted = base;
    // q, v and down in both layers; rank 4, alpha 8, except layer 1's down: rank 2, alpha 3.
    uint32_t seed = 10;
    for (int64_t l = 0; l < 2; ++l) {
      set_adapter(adapted, l, TensorRole::kAttnQ, 4, 8, seed += 2);
      set_adapter(adapted, l, TensorRole::kAttnV, 4, 8, seed += 2);
      set_adapter(adapted, l, TensorRole::kMlpDown, l == 1 ? 2 : 4, l == 1 ? 3 : 8, seed += 2);
    }
  }
};

// PEFT's names for a LlamaForCausalLM/Qwen2ForCausalLM/MistralForCausalLM LoRA, as
// PeftModel.save_pretrained writes them (the adapter name "default" removed), and the LoraConfig
// fields of adapter_config.json.
TEST(PeftAdapter, NamesShapesAndConfigFollowPeft) {
  for (const char* type : {"llama", "qwen2", "mistral"}) {
    SCOPED_TRACE(type);
    Fixture f(std::string("peft_names_") + type, type);
    const fs::path out = f.dir / "adapter";
    write_peft_adapters(f.adapted, out, write_options());
    std::set<std::string> files;
    for (const auto& e : fs::directory_iterator(out)) files.insert(e.path().filename().string());
    EXPECT_EQ(files, (std::set<std::string>{"adapter_model.safetensors", "adapter_config.json", "calq_adapter.json"}));

    const io::SafetensorsFile st = io::SafetensorsFile::open(out / "adapter_model.safetensors");
    std::map<std::string, Shape> got;
    for (const io::TensorInfo& t : st.tensors()) {
      EXPECT_EQ(t.dtype, DType::kF32) << t.name;
      got[t.name] = t.shape;
    }
    // hidden 32, q_dim 32, kv_dim 16, intermediate 48.
    const std::map<std::string, Shape> want = {
        {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", {4, 32}},
        {"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", {32, 4}},
        {"base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight", {4, 32}},
        {"base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight", {16, 4}},
        {"base_model.model.model.layers.0.mlp.down_proj.lora_A.weight", {4, 48}},
        {"base_model.model.model.layers.0.mlp.down_proj.lora_B.weight", {32, 4}},
        {"base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight", {4, 32}},
        {"base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight", {32, 4}},
        {"base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight", {4, 32}},
        {"base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight", {16, 4}},
        {"base_model.model.model.layers.1.mlp.down_proj.lora_A.weight", {2, 48}},
        {"base_model.model.model.layers.1.mlp.down_proj.lora_B.weight", {32, 2}},
    };
    EXPECT_EQ(got, want);
    EXPECT_EQ(st.metadata().at("format"), "pt");
    const float* a0 = st.tensor("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight").f32();
    EXPECT_EQ(std::memcmp(a0, f.adapted.layers[0].adapter(TensorRole::kAttnQ)->a().f32(), 4 * 32 * sizeof(float)), 0);

    const json c = read_json(out / "adapter_config.json");
    std::set<std::string> keys;
    for (const auto& [k, v] : c.items()) keys.insert(k);
    EXPECT_EQ(keys, (std::set<std::string>{"peft_type", "task_type", "r", "lora_alpha", "lora_dropout", "target_modules",
                                           "bias", "fan_in_fan_out", "inference_mode", "base_model_name_or_path",
                                           "modules_to_save", "init_lora_weights", "use_rslora", "use_dora",
                                           "rank_pattern", "alpha_pattern"}));
    EXPECT_EQ(c["peft_type"], "LORA");
    EXPECT_EQ(c["task_type"], "CAUSAL_LM");
    EXPECT_EQ(c["r"], 4);
    EXPECT_EQ(c["lora_alpha"], 8.0);
    EXPECT_EQ(c["lora_dropout"], 0.0);
    EXPECT_EQ(c["target_modules"], json::array({"q_proj", "v_proj", "down_proj"}));
    EXPECT_EQ(c["bias"], "none");
    EXPECT_EQ(c["fan_in_fan_out"], false);
    EXPECT_EQ(c["inference_mode"], true);
    EXPECT_EQ(c["base_model_name_or_path"], "/models/tiny");
    EXPECT_TRUE(c["modules_to_save"].is_null());
    EXPECT_EQ(c["init_lora_weights"], true);
    EXPECT_EQ(c["use_rslora"], false);
    EXPECT_EQ(c["use_dora"], false);
    EXPECT_EQ(c["rank_pattern"], json({{"model.layers.1.mlp.down_proj", 2}}));
    EXPECT_EQ(c["alpha_pattern"], json({{"model.layers.1.mlp.down_proj", 3.0}}));

    const json s = read_json(out / "calq_adapter.json");
    EXPECT_EQ(s["base_model_sha256"], kHash);
    EXPECT_EQ(s["base_model_path"], "/models/tiny");
    EXPECT_EQ(s["calq_version"], "0.1.0");
  }
}

TEST(PeftAdapter, RoundTripGivesTheSameAdaptersAndLogits) {
  Fixture f("peft_roundtrip");
  // One more adapter only in layer 0: target_modules then lists module paths.
  set_adapter(f.adapted, 0, TensorRole::kMlpGate, 3, 6, 99);
  const fs::path out = f.dir / "adapter";
  write_peft_adapters(f.adapted, out, write_options());
  const json c = read_json(out / "adapter_config.json");
  EXPECT_EQ(c["target_modules"].size(), 7u);
  EXPECT_EQ(c["target_modules"][0], "model.layers.0.self_attn.q_proj");

  Model back = f.base;
  const PeftAdapterSummary s = load_peft_adapters(back, out, {.base_model_sha256 = kHash});
  EXPECT_EQ(s.count, 7);
  EXPECT_EQ(s.r, 4);
  EXPECT_EQ(s.min_rank, 2);
  EXPECT_EQ(s.max_rank, 4);
  EXPECT_EQ(s.provenance.base_model_sha256, kHash);
  EXPECT_EQ(s.provenance.calq_version, "0.1.0");
  uint64_t bytes = 0;
  for (size_t l = 0; l < back.layers.size(); ++l) {
    for (const TensorRole role : kLayerLinearRoles) {
      const LoraAdapter* want = f.adapted.layers[l].adapter(role);
      const LoraAdapter* got = back.layers[l].adapter(role);
      ASSERT_EQ(want == nullptr, got == nullptr) << l << " " << role_name(role);
      if (want == nullptr) continue;
      bytes += got->nbytes();
      EXPECT_EQ(got->alpha(), want->alpha());
      ASSERT_EQ(got->a().shape(), want->a().shape());
      ASSERT_EQ(got->b().shape(), want->b().shape());
      EXPECT_EQ(std::memcmp(got->a().data(), want->a().data(), want->a().nbytes()), 0);
      EXPECT_EQ(std::memcmp(got->b().data(), want->b().data(), want->b().nbytes()), 0);
    }
  }
  EXPECT_EQ(s.bytes, bytes);
  EXPECT_EQ(back.storage_bytes(), f.adapted.storage_bytes());
  const auto ids = testutil::test_token_ids(9, back.config.vocab_size);
  const Tensor ya = forward(f.adapted, ids, f.pool), yb = forward(back, ids, f.pool);
  EXPECT_EQ(std::memcmp(ya.data(), yb.data(), ya.nbytes()), 0);

  // Overwriting needs `overwrite`; then the folder is replaced whole.
  Model fewer = f.base;
  set_adapter(fewer, 1, TensorRole::kAttnK, 2, 2, 5);
  const std::string msg = error_of([&] { write_peft_adapters(fewer, out, write_options()); });
  EXPECT_NE(msg.find("force"), std::string::npos) << msg;
  EXPECT_EQ(read_json(out / "adapter_config.json"), c);  // untouched
  PeftWriteOptions o = write_options();
  o.overwrite = true;
  write_peft_adapters(fewer, out, o);
  EXPECT_EQ(read_json(out / "adapter_config.json")["target_modules"], json::array({"model.layers.1.self_attn.k_proj"}));
  for (const auto& e : fs::directory_iterator(f.dir))
    EXPECT_FALSE(e.path().filename().string().starts_with(".")) << e.path();  // no temporaries left
}

// Rewrites the folder's files for the bad-input tests below.
void write_config(const fs::path& dir, const json& c) {
  const std::string text = c.dump(2);
  write_file_atomic(dir / "adapter_config.json", std::as_bytes(std::span(text.data(), text.size())));
}

void write_tensors(const fs::path& dir, const std::map<std::string, Tensor>& tensors) {
  std::vector<io::TensorToWrite> t;
  for (const auto& [name, v] : tensors) t.push_back({.name = name, .dtype = v.dtype(), .shape = v.shape(), .data = v.bytes()});
  io::write_safetensors(dir / "adapter_model.safetensors", t);
}

std::map<std::string, Tensor> read_tensors(const fs::path& dir) {
  const io::SafetensorsFile st = io::SafetensorsFile::open(dir / "adapter_model.safetensors");
  std::map<std::string, Tensor> out;
  for (const io::TensorInfo& t : st.tensors()) out[t.name] = st.tensor(t.name).to_f32();
  return out;
}

TEST(PeftAdapter, BadInputsAreErrorsAndInstallNothing) {
  Fixture f("peft_bad");
  const fs::path good = f.dir / "good";
  write_peft_adapters(f.adapted, good, write_options());
  const json config = read_json(good / "adapter_config.json");
  const std::map<std::string, Tensor> tensors = read_tensors(good);
  int n = 0;
  // Copies the good folder, lets `edit` break it, loads it: the error's message must contain every
  // needle, and the model must be left without adapters.
  const auto expect_refused = [&](const std::function<void(const fs::path&, json&, std::map<std::string, Tensor>&)>& edit,
                                  std::vector<std::string> needles, PeftReadOptions opts = {.base_model_sha256 = kHash}) {
    const fs::path d = f.dir / ("bad" + std::to_string(n++));
    fs::copy(good, d);
    json c = config;
    std::map<std::string, Tensor> t = tensors;
    edit(d, c, t);
    write_config(d, c);
    write_tensors(d, t);
    Model m = f.base;
    const std::string msg = error_of([&] { load_peft_adapters(m, d, opts); });
    EXPECT_FALSE(msg.empty()) << "no error for case " << n - 1;
    for (const std::string& s : needles) EXPECT_NE(msg.find(s), std::string::npos) << "needle '" << s << "' in: " << msg;
    EXPECT_FALSE(m.has_adapters());
  };
  const auto none = [](const fs::path&, json&, std::map<std::string, Tensor>&) {};
  const std::string qa = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
  const std::string qb = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight";

  // Base hash mismatch: the folder and both hashes named; skipping the check loads it.
  const std::string other(64, 'b');
  expect_refused(none, {"bad0", kHash, other, "adapter_skip_hash_check"}, {.base_model_sha256 = other});
  {
    Model m = f.base;
    EXPECT_EQ(load_peft_adapters(m, good, {.base_model_sha256 = other, .check_base_hash = false}).count, 6);
  }
  // No sidecar: nothing to check against.
  expect_refused([](const fs::path& d, json&, auto&) { fs::remove(d / "calq_adapter.json"); },
                 {"calq_adapter.json", "adapter_skip_hash_check"});
  // An unknown tensor name, and one for a layer the model lacks.
  expect_refused([](const fs::path&, json&, auto& t) { t["base_model.model.lm_head.lora_A.weight"] = random_tensor({4, 32}, 1); },
                 {"adapter_model.safetensors", "base_model.model.lm_head.lora_A.weight"});
  expect_refused(
      [](const fs::path&, json&, auto& t) {
        t["base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight"] = random_tensor({4, 32}, 1);
      },
      {"layers.7", "2 layers"});
  // A tensor of a module target_modules does not name.
  expect_refused(
      [](const fs::path&, json&, auto& t) {
        t["base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight"] = random_tensor({4, 32}, 1);
        t["base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight"] = random_tensor({16, 4}, 1);
      },
      {"k_proj", "target_modules"});
  // A targeted module without its B.
  expect_refused([&](const fs::path&, json&, auto& t) { t.erase(qb); }, {qb});
  // Wrong shapes: A's input width, and a rank that disagrees with r.
  expect_refused([&](const fs::path&, json&, auto& t) { t[qa] = random_tensor({4, 31}, 1); }, {qa, "[4, 31]", "[4, 32]"});
  expect_refused([&](const fs::path&, json& c, auto&) { c["r"] = 8; }, {qa, "[4, 32]", "rank 8", "[8, 32]"});
  // A rank larger than min(in, out): k_proj is [16, 32].
  expect_refused(
      [](const fs::path&, json& c, auto& t) {
        c["target_modules"] = json::array({"k_proj"});
        c["r"] = 17;
        t.clear();
        for (int l = 0; l < 2; ++l) {
          t[fmt::format("base_model.model.model.layers.{}.self_attn.k_proj.lora_A.weight", l)] = random_tensor({17, 32}, 1);
          t[fmt::format("base_model.model.model.layers.{}.self_attn.k_proj.lora_B.weight", l)] = random_tensor({16, 17}, 1);
        }
      },
      {"rank 17", "min(in, out) = 16"});
  // Target roles that match nothing (a GPT-2 name), as a list entry and as a regex.
  expect_refused([](const fs::path&, json& c, auto&) { c["target_modules"].push_back("c_attn"); }, {"c_attn", "q_proj"});
  expect_refused([](const fs::path&, json& c, auto&) { c["target_modules"] = ".*\\.c_attn"; }, {"c_attn"});
  // Non-finite values.
  expect_refused([&](const fs::path&, json&, auto& t) { t[qb].mutable_f32()[5] = std::nanf(""); }, {qb, "[5]", "not finite"});
  // Config values and unsupported variants.
  expect_refused([](const fs::path&, json& c, auto&) { c["lora_alpha"] = 0; }, {"lora_alpha"});
  expect_refused([](const fs::path&, json& c, auto&) { c["alpha_pattern"]["model.layers.1.mlp.down_proj"] = -3; },
                 {"alpha_pattern"});
  expect_refused([](const fs::path&, json& c, auto&) { c["use_dora"] = true; }, {"use_dora"});
  expect_refused([](const fs::path&, json& c, auto&) { c["peft_type"] = "IA3"; }, {"IA3"});
  expect_refused([](const fs::path&, json& c, auto&) { c["bias"] = "all"; }, {"bias"});
  expect_refused([](const fs::path&, json& c, auto&) { c["modules_to_save"] = json::array({"lm_head"}); },
                 {"modules_to_save"});

  // A model that already has adapters.
  Model twice = f.adapted;
  EXPECT_NE(error_of([&] { load_peft_adapters(twice, good, {.base_model_sha256 = kHash}); }).find("already"),
            std::string::npos);
}

TEST(PeftAdapter, WriteRefusesWithoutOutput) {
  Fixture f("peft_write_bad");
  const fs::path out = f.dir / "adapter";
  EXPECT_NE(error_of([&] { write_peft_adapters(f.base, out, write_options()); }).find("no LoRA adapters"),
            std::string::npos);
  Model big = f.adapted;
  set_adapter(big, 1, TensorRole::kAttnK, 17, 1, 3);  // k_proj is [16, 32]
  const std::string msg = error_of([&] { write_peft_adapters(big, out, write_options()); });
  EXPECT_NE(msg.find("rank 17"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(out));
  EXPECT_NE(error_of([&] { write_peft_adapters(f.adapted, f.dir / "missing" / "adapter", write_options()); })
                .find("does not exist"),
            std::string::npos);
  // A folder that is not an adapter folder is never replaced, even with overwrite.
  fs::create_directories(f.dir / "precious");
  write_file_atomic(f.dir / "precious" / "notes.txt", std::as_bytes(std::span("keep", 4)));
  PeftWriteOptions o = write_options();
  o.overwrite = true;
  EXPECT_NE(error_of([&] { write_peft_adapters(f.adapted, f.dir / "precious", o); }).find("not an adapter folder"),
            std::string::npos);
  EXPECT_EQ(read_text_file(f.dir / "precious" / "notes.txt"), "keep");
  for (const auto& e : fs::directory_iterator(f.dir))
    EXPECT_FALSE(e.path().filename().string().starts_with(".")) << e.path();
}

// PEFT configs calq does not write but reads: a regex target, layers_to_transform, rsLoRA scaling,
// rank_pattern by short name, "all-linear".
TEST(PeftAdapter, ReadsRegexTargetsLayersAndRsLora) {
  Fixture f("peft_variants");
  const fs::path d = f.dir / "variant";
  fs::create_directories(d);
  std::map<std::string, Tensor> t;
  const auto add = [&](int64_t l, const char* module, int64_t r, int64_t in, int64_t out) {
    t[fmt::format("base_model.model.model.layers.{}.{}.lora_A.weight", l, module)] = random_tensor({r, in}, 7);
    t[fmt::format("base_model.model.model.layers.{}.{}.lora_B.weight", l, module)] = random_tensor({out, r}, 8);
  };
  add(1, "self_attn.q_proj", 4, 32, 32);
  add(1, "self_attn.o_proj", 2, 32, 32);
  write_tensors(d, t);
  write_config(d, {{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 16}, {"target_modules", ".*\\.(q_proj|o_proj)"},
                   {"layers_to_transform", json::array({1})}, {"use_rslora", true}, {"rank_pattern", {{"o_proj", 2}}}});
  Model m = f.base;
  const PeftAdapterSummary s = load_peft_adapters(m, d, {.check_base_hash = false});
  EXPECT_EQ(s.count, 2);
  EXPECT_FALSE(m.layers[0].has_adapters());
  ASSERT_NE(m.layers[1].adapter(TensorRole::kAttnQ), nullptr);
  ASSERT_NE(m.layers[1].adapter(TensorRole::kAttnOut), nullptr);
  // rsLoRA: scale = lora_alpha / sqrt(r).
  EXPECT_FLOAT_EQ(m.layers[1].adapter(TensorRole::kAttnQ)->scale(), static_cast<float>(16 / std::sqrt(4.0)));
  EXPECT_FLOAT_EQ(m.layers[1].adapter(TensorRole::kAttnOut)->scale(), static_cast<float>(16 / std::sqrt(2.0)));

  // "all-linear" needs all seven linears of every layer.
  write_config(d, {{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 16}, {"target_modules", "all-linear"}});
  Model m2 = f.base;
  const std::string msg = error_of([&] { load_peft_adapters(m2, d, {.check_base_hash = false}); });
  EXPECT_NE(msg.find("no tensor 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight'"), std::string::npos)
      << msg;
}

}  // namespace
}  // namespace calq::model
