// GPTQ / AWQ / compressed-tensors checkpoints: write_hf_model with a scheme, then load_hf_model, gives
// every linear back in the same format with the same bytes (same logits); act-order GPTQ loads as float
// by its g_idx; the refusals and the readers' errors name the file, key or tensor.
#include "model/hf_quant.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <functional>
#include <tuple>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/thread_pool.h"
#include "io/safetensors.h"
#include "model/forward.h"
#include "model/hf_export.h"
#include "model/synth.h"
#include "support/error_of.h"
#include "support/shared_dir.h"

namespace calq::model {
namespace {

using testing::error_of;

// Dimensions GPTQ can pack (every size a multiple of 32): q 64, kv 32, ffn 128.
Model quantized_model(const std::string& format, ThreadPool& pool, uint64_t seed = 4) {
  Model m = synth_model(synth_config({.model_type = "llama", .layers = 2, .hidden = 64, .heads = 4, .kv_heads = 2,
                                      .ffn = 128, .vocab = 270, .tied = false}),
                        seed, pool);
  for (LayerWeights& l : m.layers) {
    for (TensorRole role : kLayerLinearRoles) {
      const Tensor w = l.linear(role).dense();
      l.linear(role) = QuantizedTensor::quantize(pool, format_by_name(format), w.f32(), w.dim(0), w.dim(1));
    }
  }
  return m;
}

void expect_same_linears(const Model& a, const Model& b) {
  for (size_t l = 0; l < a.layers.size(); ++l) {
    for (TensorRole role : kLayerLinearRoles) {
      const LinearWeight& x = a.layers[l].linear(role);
      const LinearWeight& y = b.layers[l].linear(role);
      SCOPED_TRACE(fmt::format("layer {} {}", l, role_name(role)));
      ASSERT_TRUE(y.is_quantized());
      EXPECT_EQ(x.format_name(), y.format_name());
      ASSERT_EQ(x.quantized().bytes.size(), y.quantized().bytes.size());
      EXPECT_EQ(std::memcmp(x.quantized().bytes.data(), y.quantized().bytes.data(), x.quantized().bytes.size()), 0);
    }
  }
}

// Rewrites the safetensors file at `path` with tensor `name`'s bytes changed by `edit` (same dtype and
// shape), as a broken or peer checkpoint would hold them.
void rewrite_tensor(const std::filesystem::path& path, const std::string& name,
                    const std::function<void(std::vector<std::byte>&)>& edit) {
  std::vector<io::TensorToWrite> tensors;
  std::vector<std::vector<std::byte>> keep;
  {
    const io::SafetensorsFile f = io::SafetensorsFile::open(path, {.quantized = true});
    keep.reserve(f.tensors().size());
    for (const io::TensorInfo& info : f.tensors()) {
      const Tensor t = f.tensor(info.name);
      const auto* b = static_cast<const std::byte*>(t.data());
      keep.emplace_back(b, b + (info.end - info.begin));
      if (info.name == name) edit(keep.back());
      tensors.push_back({.name = info.name, .dtype = info.dtype, .shape = info.shape, .data = keep.back()});
    }
  }
  const std::filesystem::path tmp = path.parent_path() / "rewritten.safetensors";
  io::write_safetensors(tmp, tensors, {{"format", "pt"}});
  std::filesystem::rename(tmp, path);
}

nlohmann::json read_json(const std::filesystem::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in);
}

void write_json(const std::filesystem::path& p, const nlohmann::json& j) { std::ofstream(p) << j.dump(2); }

TEST(HfQuant, EverySchemeRoundTripsItsFormatsBitForBit) {
  ThreadPool pool(2);
  const auto dir = testing::temp_dir("hf_quant");
  const std::vector<std::pair<HfQuantScheme, std::string>> cases = {
      {HfQuantScheme::kGptq, "int4-g32-sym"},        {HfQuantScheme::kGptq, "int3-g64-sym"},
      {HfQuantScheme::kGptq, "int8-pc-sym"},         {HfQuantScheme::kGptqV2, "int4-g32-asym"},
      {HfQuantScheme::kGptqV2, "int2-g32-asym"},     {HfQuantScheme::kAwq, "int4-g32-asym"},
      {HfQuantScheme::kAwq, "int4-g64-sym"},         {HfQuantScheme::kCompressedTensors, "int4-g32-sym"},
      {HfQuantScheme::kCompressedTensors, "int4-g32-asym"}, {HfQuantScheme::kCompressedTensors, "int8-pc-asym"},
      {HfQuantScheme::kCompressedTensors, "fp8-e4m3"},      {HfQuantScheme::kCompressedTensors, "fp8-e4m3-pt"},
      {HfQuantScheme::kBnbNf4, "nf4-bnb"},
  };
  const std::vector<int32_t> ids = {1, 5, 260, 17, 269};
  for (const auto& [scheme, format] : cases) {
    const std::string tag = fmt::format("{} {}", hf_quant_scheme_name(scheme), format);
    SCOPED_TRACE(tag);
    const Model m = quantized_model(format, pool);
    const auto folder = dir / fmt::format("{}-{}", hf_quant_scheme_name(scheme), format);
    write_hf_model(m, folder, {.quant = scheme}, pool);
    const nlohmann::json config = read_json(folder / "config.json");
    ASSERT_TRUE(config.contains("quantization_config"));
    EXPECT_EQ(inspect_hf_model(folder).parameter_count, m.parameter_count());
    EXPECT_EQ(std::filesystem::exists(folder / "quantize_config.json"),
              scheme == HfQuantScheme::kGptq || scheme == HfQuantScheme::kGptqV2);
    const Model back = load_hf_model(folder, pool);
    expect_same_linears(m, back);
    const Tensor a = forward(m, ids, pool), b = forward(back, ids, pool);
    EXPECT_EQ(std::memcmp(a.f32(), b.f32(), sizeof(float) * static_cast<size_t>(a.numel())), 0);
  }
  std::filesystem::remove_all(dir);
}

TEST(HfQuant, RefusesWhatTheSchemeCannotHoldAndLeavesNothing) {
  ThreadPool pool(1);
  const auto dir = testing::temp_dir("hf_quant");
  EXPECT_NE(hf_quant_scheme_fits(HfQuantScheme::kAwq, format_by_name("int3-g32-sym")).find("4 bits"), std::string::npos);
  EXPECT_NE(hf_quant_scheme_fits(HfQuantScheme::kGptq, format_by_name("int4-g32-sym-f32")).find("fp32"),
            std::string::npos);
  EXPECT_NE(hf_quant_scheme_fits(HfQuantScheme::kGptq, format_by_name("q4_k")).find("not an integer format"),
            std::string::npos);
  EXPECT_EQ(hf_quant_scheme_fits(HfQuantScheme::kCompressedTensors, format_by_name("fp8-e4m3")), "");
  // v1 cannot store a zero point of 0: force one and expect the tensor named, no folder.
  Model m = quantized_model("int4-g32-asym", pool);
  {
    const QuantizedTensor& q = m.layers[1].w_up.quantized();
    std::vector<std::byte> bytes(q.bytes.begin(), q.bytes.end());
    bytes[2] = std::byte{0};  // the first group's zero point byte (after its fp16 scale)
    m.layers[1].w_up = QuantizedTensor::copy_of(*q.format, q.rows, q.cols, bytes);
  }
  const std::string e = error_of([&] { write_hf_model(m, dir / "v1", {.quant = HfQuantScheme::kGptq}, pool); });
  EXPECT_NE(e.find("model.layers.1.mlp.up_proj"), std::string::npos) << e;
  EXPECT_NE(e.find("v2"), std::string::npos) << e;
  EXPECT_FALSE(std::filesystem::exists(dir / "v1"));
  // A float linear, or two formats, in a one-format checkpoint.
  Model mixed = quantized_model("int4-g32-sym", pool);
  const Tensor w = mixed.layers[0].wk.to_dense(pool);
  mixed.layers[0].wk = QuantizedTensor::quantize(pool, format_by_name("int8-pc-sym"), w.f32(), w.dim(0), w.dim(1));
  const std::string e2 = error_of([&] { write_hf_model(mixed, dir / "mixed", {.quant = HfQuantScheme::kGptq}, pool); });
  EXPECT_NE(e2.find("int8-pc-sym"), std::string::npos) << e2;
  mixed.layers[0].wk = w;
  const std::string e3 = error_of([&] { write_hf_model(mixed, dir / "mixed", {.quant = HfQuantScheme::kGptq}, pool); });
  EXPECT_NE(e3.find("model.layers.0.self_attn.k_proj.weight' is not quantized"), std::string::npos) << e3;
  EXPECT_FALSE(std::filesystem::exists(dir / "mixed"));
  std::filesystem::remove_all(dir);
}

TEST(HfQuant, ActOrderGptqLoadsAsFloatByItsGroupIndex) {
  ThreadPool pool(1);
  const auto dir = testing::temp_dir("hf_quant");
  const Model m = quantized_model("int4-g32-sym", pool);
  write_hf_model(m, dir / "m", {.quant = HfQuantScheme::kGptq}, pool);
  // Rewrite q_proj of layer 0 with g_idx[k] = k % 2 (groups interleaved, as act-order checkpoints
  // have them): the loaded weight is dense, each input's value from its own group's scale.
  rewrite_tensor(dir / "m" / "model.safetensors", "model.layers.0.self_attn.q_proj.g_idx", [](std::vector<std::byte>& b) {
    for (size_t k = 0; k < b.size() / 4; ++k) {
      const int32_t g = static_cast<int32_t>(k % 2);
      std::memcpy(b.data() + 4 * k, &g, 4);
    }
  });
  const Model back = load_hf_model(dir / "m", pool);
  const LinearWeight& q = back.layers[0].wq;
  ASSERT_FALSE(q.is_quantized());
  // Input 33 (group 1 by g_idx; group 1 by position too) and input 2 (group 0 by g_idx and position)
  // keep their values; input 32 now takes group 0's scale.
  const Tensor orig = m.layers[0].wq.to_dense(pool);
  EXPECT_EQ(q.dense().f32()[33], orig.f32()[33]);
  EXPECT_EQ(q.dense().f32()[2], orig.f32()[2]);
  EXPECT_TRUE(back.layers[0].wk.is_quantized());
  std::filesystem::remove_all(dir);
}

TEST(HfQuant, NonFiniteScaleIsAFormatErrorNamingTheTensor) {
  ThreadPool pool(1);
  const auto dir = testing::temp_dir("hf_quant");
  write_hf_model(quantized_model("int4-g32-sym", pool), dir / "m", {.quant = HfQuantScheme::kGptq}, pool);
  rewrite_tensor(dir / "m" / "model.safetensors", "model.layers.1.mlp.down_proj.scales", [](std::vector<std::byte>& b) {
    const uint16_t nan = 0x7e00;  // fp16 NaN, output 0 group 0
    std::memcpy(b.data(), &nan, 2);
  });
  const std::string e = error_of([&] { load_hf_model(dir / "m", pool); });
  EXPECT_NE(e.find("model.layers.1.mlp.down_proj.weight': output 0 group 0 has a non-finite scale"), std::string::npos)
      << e;
  std::filesystem::remove_all(dir);
}

TEST(HfQuant, ReaderErrorsNameTheFileKeyOrTensor) {
  ThreadPool pool(1);
  const auto dir = testing::temp_dir("hf_quant");
  const Model m = quantized_model("int4-g32-sym", pool);
  write_hf_model(m, dir / "m", {.quant = HfQuantScheme::kCompressedTensors}, pool);
  const auto config_path = dir / "m" / "config.json";
  const nlohmann::json good = read_json(config_path);
  const auto expect_error = [&](const nlohmann::json& config, const std::vector<std::string>& parts) {
    write_json(config_path, config);
    const std::string e = error_of([&] { load_hf_model(dir / "m", pool); });
    ASSERT_FALSE(e.empty());
    for (const auto& p : parts) EXPECT_NE(e.find(p), std::string::npos) << e << "\n  lacks: " << p;
  };
  nlohmann::json c = good;
  c["quantization_config"]["quant_method"] = "hqq";
  expect_error(c, {"config.json", "quant_method 'hqq'"});
  c = good;
  c["quantization_config"]["config_groups"]["group_0"]["weights"]["rounding"] = "stochastic";
  expect_error(c, {"config.json", "unknown QuantizationArgs key 'rounding'"});
  c = good;
  c["quantization_config"]["config_groups"]["group_0"]["input_activations"] = {{"num_bits", 8}};
  expect_error(c, {"input_activations"});
  c = good;
  c["quantization_config"]["config_groups"]["group_0"]["weights"]["group_size"] = 64;  // the tensors say 32
  expect_error(c, {"weight_scale", "[64, 1]"});
  c = good;
  c["quantization_config"] = {{"quant_method", "gptq"}, {"bits", 4}, {"group_size", 32}, {"checkpoint_format", "marlin"}};
  expect_error(c, {"checkpoint_format 'marlin'"});
  c = good;
  c["quantization_config"] = {{"quant_method", "gptq"}, {"bits", 4}, {"group_size", 32}};
  expect_error(c, {"weight_packed", "not part of"});  // a pack-quantized folder read as GPTQ
  std::filesystem::remove_all(dir);
}

// bitsandbytes: transformers' names, dtypes and shapes, the packed quant state as Python's json.dumps
// writes it, and the reader's refusals naming the key.
TEST(HfQuant, BitsandbytesTensorsStateAndRefusals) {
  ThreadPool pool(1);
  const auto dir = testing::temp_dir("hf_quant");
  const Model m = quantized_model("nf4-bnb", pool);
  write_hf_model(m, dir / "m", {.quant = HfQuantScheme::kBnbNf4}, pool);
  const io::SafetensorsModel st = io::SafetensorsModel::open_folder(dir / "m", {.quantized = true});
  const std::string w = "model.layers.1.mlp.down_proj.weight";  // [64, 128]: 128 blocks, one nested group
  const std::vector<std::tuple<std::string, DType, Shape>> want = {
      {w, DType::kU8, {64 * 128 / 2, 1}},        {w + ".absmax", DType::kU8, {128}},
      {w + ".quant_map", DType::kF32, {16}},      {w + ".nested_absmax", DType::kF32, {1}},
      {w + ".nested_quant_map", DType::kF32, {256}}};
  for (const auto& [name, dtype, shape] : want) {
    ASSERT_TRUE(st.contains(name)) << name;
    EXPECT_EQ(st.info(name).dtype, dtype) << name;
    EXPECT_EQ(st.info(name).shape, shape) << name;
  }
  const QuantizedTensor& q = m.layers[1].w_down.quantized();
  float offset;
  std::memcpy(&offset, q.bytes.data() + 64 * q.format->row_bytes(128), 4);
  const Tensor state = st.tensor(w + ".quant_state.bitsandbytes__nf4");
  const std::string text(reinterpret_cast<const char*>(state.data()), static_cast<size_t>(state.numel()));
  EXPECT_EQ(text, fmt::format("{{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float32\", \"shape\": "
                              "[64, 128], \"nested_blocksize\": 256, \"nested_dtype\": \"float32\", "
                              "\"nested_offset\": {}}}", static_cast<double>(offset)));
  EXPECT_EQ(static_cast<float>(nlohmann::json::parse(text)["nested_offset"].get<double>()), offset);
  const auto config_path = dir / "m" / "config.json";
  const nlohmann::json good = read_json(config_path);
  EXPECT_EQ(good["quantization_config"]["quant_method"], "bitsandbytes");
  EXPECT_EQ(good["quantization_config"]["bnb_4bit_quant_type"], "nf4");
  EXPECT_EQ(good["quantization_config"]["bnb_4bit_use_double_quant"], true);
  for (const auto& [key, value] : std::vector<std::pair<std::string, nlohmann::json>>{
           {"bnb_4bit_quant_type", "fp4"}, {"bnb_4bit_use_double_quant", false}, {"load_in_4bit", false},
           {"load_in_8bit", true}, {"bnb_4bit_quant_storage", "bfloat16"}}) {
    nlohmann::json c = good;
    c["quantization_config"][key] = value;
    if (key == "load_in_4bit") c["quantization_config"]["_load_in_4bit"] = false;
    write_json(config_path, c);
    try {
      load_hf_model(dir / "m", pool);
      ADD_FAILURE() << key << " accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kUnsupported) << e.what();
      EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
    }
  }
  write_json(config_path, good);
  // A quant state with blocks of 128 (bitsandbytes allows it; nf4-bnb has 64): refused naming the tensor.
  const auto path = dir / "m" / "model.safetensors";
  std::vector<io::TensorToWrite> tensors;
  std::vector<std::vector<std::byte>> keep;
  {
    const io::SafetensorsFile f = io::SafetensorsFile::open(path, {.quantized = true});
    for (const io::TensorInfo& info : f.tensors()) {
      const Tensor t = f.tensor(info.name);
      const auto* b = static_cast<const std::byte*>(t.data());
      keep.emplace_back(b, b + (info.end - info.begin));
      Shape shape = info.shape;
      if (info.name == w + ".quant_state.bitsandbytes__nf4") {
        std::string j(reinterpret_cast<const char*>(b), keep.back().size());
        const std::string from = "\"blocksize\": 64,";
        j.replace(j.find(from), from.size(), "\"blocksize\": 128,");
        const auto* jb = reinterpret_cast<const std::byte*>(j.data());
        keep.back().assign(jb, jb + j.size());
        shape = {static_cast<int64_t>(j.size())};
      }
      tensors.push_back({.name = info.name, .dtype = info.dtype, .shape = shape, .data = keep.back()});
    }
    io::write_safetensors(dir / "m" / "new.safetensors", tensors, {{"format", "pt"}});
  }
  std::filesystem::rename(dir / "m" / "new.safetensors", path);
  try {
    load_hf_model(dir / "m", pool);
    ADD_FAILURE() << "blocksize 128 accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported) << e.what();
    EXPECT_NE(std::string(e.what()).find(w + ".quant_state.bitsandbytes__nf4"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("blocksize 128"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace calq::model
