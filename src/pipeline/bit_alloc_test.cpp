#include "pipeline/bit_alloc.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/error.h"
#include "model/tiny_model_testutil.h"
#include "support/error_of.h"
#include "support/shared_dir.h"

namespace calq::pipeline {
namespace {

using calq::testing::error_of;

struct Best {
  bool found = false;
  std::vector<size_t> choice;
  uint64_t bytes = 0;
  double kld = 0.0;
};

// Every combination; the contract's order: KLD summed in item order, then bytes, then the option
// index of the last item, the one before it, and so on.
Best brute_force(const std::vector<BitItem>& items, uint64_t budget) {
  Best best;
  std::vector<size_t> c(items.size(), 0);
  while (true) {
    double kld = 0.0;
    uint64_t bytes = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      kld += items[i].options[c[i]].kld;
      bytes += items[i].options[c[i]].bytes;
    }
    if (bytes <= budget) {
      bool better = !best.found || kld < best.kld || (kld == best.kld && bytes < best.bytes);
      if (best.found && kld == best.kld && bytes == best.bytes) {
        for (size_t i = items.size(); i-- > 0;) {
          if (c[i] != best.choice[i]) {
            better = c[i] < best.choice[i];
            break;
          }
        }
      }
      if (better) best = {.found = true, .choice = c, .bytes = bytes, .kld = kld};
    }
    size_t i = 0;
    while (i < items.size() && ++c[i] == items[i].options.size()) c[i++] = 0;
    if (i == items.size()) return best;
  }
}

// Random instances: sizes as GGUF tensors have them (rows × blocks × block bytes) or arbitrary
// integers (granule 1); KLDs random doubles, or small integers to force exact ties.
std::vector<BitItem> random_items(std::mt19937_64& rng, bool gguf_like, bool integer_kld) {
  std::uniform_int_distribution<int> n_items(1, 8), n_opts(1, 4), rows(1, 16), any(1, 5000), small(0, 6);
  std::uniform_real_distribution<double> kld(0.0, 1.0);
  constexpr uint64_t kBlockBytes[] = {110, 144, 176, 210, 272};
  std::vector<BitItem> items(static_cast<size_t>(n_items(rng)));
  for (size_t i = 0; i < items.size(); ++i) {
    items[i].name = std::string("t").append(std::to_string(i));
    const uint64_t r = static_cast<uint64_t>(rows(rng)) * 128;
    const int m = n_opts(rng);
    for (int j = 0; j < m; ++j) {
      const uint64_t bytes = gguf_like ? r * 2 * kBlockBytes[std::uniform_int_distribution<int>(0, 4)(rng)]
                                       : static_cast<uint64_t>(any(rng));
      items[i].options.push_back({.bytes = bytes, .kld = integer_kld ? small(rng) : kld(rng)});
    }
  }
  return items;
}

TEST(AllocateBits, ExactAgainstBruteForce) {
  int solved = 0, infeasible = 0;
  for (uint64_t seed = 0; seed < 600; ++seed) {
    std::mt19937_64 rng(seed);
    const std::vector<BitItem> items = random_items(rng, seed % 3 != 0, seed % 5 == 0);
    uint64_t lo = 0, hi = 0;
    for (const auto& it : items) {
      uint64_t a = it.options[0].bytes, b = a;
      for (const auto& o : it.options) a = std::min(a, o.bytes), b = std::max(b, o.bytes);
      lo += a, hi += b;
    }
    // Budgets from a little below the smallest allocation to above the largest.
    const uint64_t budget = std::uniform_int_distribution<uint64_t>(lo - lo / 20, hi + hi / 20)(rng);
    const Best want = brute_force(items, budget);
    if (!want.found) {
      EXPECT_NE(error_of([&] { allocate_bits(items, {.budget_bytes = budget}); }).find("below the smallest"),
                std::string::npos) << "seed " << seed;
      ++infeasible;
      continue;
    }
    const BitAllocation got = allocate_bits(items, {.budget_bytes = budget});
    EXPECT_EQ(got.kld, want.kld) << "seed " << seed;
    EXPECT_EQ(got.bytes, want.bytes) << "seed " << seed;
    EXPECT_EQ(got.choice, want.choice) << "seed " << seed;
    EXPECT_LE(got.bytes, budget);
    ++solved;
  }
  EXPECT_GT(solved, 400);
  EXPECT_GT(infeasible, 5);
}

TEST(AllocateBits, GranuleAndTies) {
  // Sizes 1440 and 2880 bytes over a 1440 base: granule 1440, one extra cell per item.
  std::vector<BitItem> items = {
      {.name = "a", .options = {{.bytes = 1440, .kld = 3.0}, {.bytes = 2880, .kld = 1.0}}},
      {.name = "b", .options = {{.bytes = 1440, .kld = 3.0}, {.bytes = 2880, .kld = 1.0}}},
  };
  BitAllocation r = allocate_bits(items, {.budget_bytes = 4400});
  EXPECT_EQ(r.granule, 1440u);
  EXPECT_EQ(r.cells, 2u);
  EXPECT_DOUBLE_EQ(r.kld, 4.0);
  // Equal KLD either way: the last item keeps its lower option index.
  EXPECT_EQ(r.choice, (std::vector<size_t>{1, 0}));
  // Equal KLD at different sizes: the smaller wins.
  items[0].options.push_back({.bytes = 4320, .kld = 1.0});
  r = allocate_bits(items, {.budget_bytes = 100000});
  EXPECT_EQ(r.choice, (std::vector<size_t>{1, 1}));
  EXPECT_EQ(r.bytes, 5760u);
  // Deterministic: the same call gives the same answer.
  EXPECT_EQ(allocate_bits(items, {.budget_bytes = 100000}).choice, r.choice);
}

TEST(AllocateBits, Errors) {
  const std::vector<BitItem> items = {{.name = "a", .options = {{.bytes = 10, .kld = 1.0}, {.bytes = 21, .kld = 0.5}}},
                                      {.name = "b", .options = {{.bytes = 10, .kld = 1.0}, {.bytes = 1000011, .kld = 0.0}}}};
  EXPECT_NE(error_of([&] { allocate_bits(items, {.budget_bytes = 19}); }).find("smallest allocation, 20 bytes"),
            std::string::npos);
  EXPECT_NE(error_of([&] { allocate_bits(items, {.budget_bytes = 2000000, .max_table_entries = 1000}); })
                .find("exact table would need 2 tensors x 1000013 cells"),
            std::string::npos);
  std::vector<BitItem> bad = {{.name = "c", .options = {{.bytes = 1, .kld = -1.0}}}};
  EXPECT_NE(error_of([&] { allocate_bits(bad, {.budget_bytes = 5}); }).find("c has a KLD of -1"), std::string::npos);
  EXPECT_EQ(allocate_bits({}, {.budget_bytes = 0}).bytes, 0u);
}

// ---- sensitivity maps ----

std::string map_json(const std::string& entries, const std::string& granularity = "tensor") {
  return R"({"model": "m", "eval_text": "t.txt", "ctx": 64, "windows": 4, "granularity": ")" + granularity +
         R"(", "method": "rtn", "formats": ["int4-g32-asym", "int8-pc-sym"], "entries": [)" + entries + "]}";
}

std::string entry(const std::string& tensor, int64_t params, double k4, double k8) {
  return fmt::format(R"({{"tensor": "{}", "layer": 0, "role": "r", "params": {}, "kld": {{"int4-g32-asym": {},
                     "int8-pc-sym": {}}}}})", tensor, params, k4, k8);
}

TEST(SensitivityFileParse, ParsesAndRejects) {
  const SensitivityFile m = parse_sensitivity_file(map_json(entry("blk.0.attn_q.weight", 1024, 0.5, 0.1)), "s.json");
  ASSERT_EQ(m.entries.size(), 1u);
  EXPECT_EQ(m.entries[0].kld.at("int8-pc-sym"), 0.1);
  EXPECT_EQ(m.ctx, 64);
  const auto err = [](const std::string& text) { return error_of([&] { parse_sensitivity_file(text, "s.json"); }); };
  EXPECT_NE(err("{").find("s.json: not valid JSON"), std::string::npos);
  EXPECT_NE(err(map_json(entry("x", 1, 0, 0), "layer")).find("s.json: granularity is \"layer\""), std::string::npos);
  EXPECT_NE(err(map_json(entry("blk.0.attn_q.weight", 1024, -0.5, 0.1)))
                .find("entries[0] (blk.0.attn_q.weight): kld of int4-g32-asym is -0.5"),
            std::string::npos);
  EXPECT_NE(err(map_json(R"({"tensor": "a", "layer": 0, "role": "r", "params": 4, "kld": {"int8-pc-sym": 1e999}})"))
                .find("s.json: not valid JSON"),
            std::string::npos);
  EXPECT_NE(err(map_json(entry("a", 1, 0, 0) + "," + entry("a", 1, 0, 0))).find("tensor a appears twice"),
            std::string::npos);
  EXPECT_NE(err(R"({"model": "m"})").find("s.json: missing \"eval_text\""), std::string::npos);
  EXPECT_NE(err(map_json(R"({"tensor": "a", "layer": 0, "role": "r", "params": 4, "kld": {"q4_k": 0.1}})"))
                .find("'q4_k', which is not in the map's \"formats\""),
            std::string::npos);
}

// ---- a model's budget ----

class TargetBudget : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = model::testutil::load_tiny_model(calq::testing::temp_dir("bit_alloc"), {.tied = true, .layers = 2}, pool_);
    base_.format = &format_by_name("int8-pc-sym");
    base_.head_format = &format_by_name("q8_0");
  }
  // A KLD for every linear weight: int4 costs more in later layers and in the MLP.
  std::string full_map() const {
    std::string entries;
    for (const auto& a : plan_model_quantization(model_, base_)) {
      if (a.layer < 0) continue;
      const double k4 = 0.01 * static_cast<double>(1 + a.layer) * (a.name.find("ffn") != std::string::npos ? 3 : 1);
      if (!entries.empty()) entries += ",";
      entries += entry(a.name, a.rows * a.cols, k4, k4 / 16);
    }
    return map_json(entries);
  }
  TargetOptions target(double bpw) const {
    return {.target_bpw = bpw, .candidates = {&format_by_name("int4-g32-asym"), &format_by_name("int8-pc-sym")}};
  }

  ThreadPool pool_{2};
  model::Model model_;
  ModelQuantizeOptions base_;
};

TEST_F(TargetBudget, BytesMatchTheQuantizedModel) {
  const SensitivityFile map = parse_sensitivity_file(full_map(), "s.json");
  for (const double bpw : {7.0, 8.0, 9.0, 12.0}) {
    const TargetAllocation r = allocate_to_target(model_, base_, map, target(bpw));
    EXPECT_LE(r.total_bytes(), r.budget_bytes);
    EXPECT_LE(r.predicted_bpw(), bpw);
    // The down projections (rows of 48) cannot be int4-g32: only int8 is offered there.
    for (const auto& t : r.tensors) {
      if (t.name.find("ffn_down") != std::string::npos) {
        EXPECT_EQ(t.format->name(), "int8-pc-sym");
      }
    }
    model::Model q = model::testutil::load_tiny_model(calq::testing::temp_dir("bit_alloc_q"), {.tied = true, .layers = 2},
                                                      pool_);
    ModelQuantizeOptions o = base_;
    for (const auto& rule : r.rule_texts()) o.rules.push_back(parse_tensor_rule(rule));
    quantize_model(q, o, {}, {}, nullptr, {}, pool_);
    EXPECT_EQ(q.storage_bytes(), r.total_bytes()) << bpw;
    EXPECT_LE(q.bits_per_weight(), bpw);
    for (const auto& a : plan_model_quantization(q, o)) {
      for (const auto& t : r.tensors) {
        if (t.name == a.name) {
          EXPECT_EQ(a.format, t.format) << a.name;
        }
      }
    }
  }
  // Lower targets spend fewer bytes and predict more KLD.
  const TargetAllocation lo = allocate_to_target(model_, base_, map, target(7.0));
  const TargetAllocation hi = allocate_to_target(model_, base_, map, target(12.0));
  EXPECT_LT(lo.allocated_bytes, hi.allocated_bytes);
  EXPECT_GT(lo.predicted_kld(), hi.predicted_kld());
}

TEST_F(TargetBudget, Errors) {
  const SensitivityFile map = parse_sensitivity_file(full_map(), "s.json");
  const std::string infeasible = error_of([&] { allocate_to_target(model_, base_, map, target(2.0)); });
  EXPECT_NE(infeasible.find("target 2 bits per weight: infeasible; the smallest candidates give"), std::string::npos)
      << infeasible;
  TargetOptions q4 = target(8.0);
  q4.candidates.push_back(&format_by_name("q8_0"));
  EXPECT_NE(error_of([&] { allocate_to_target(model_, base_, map, q4); }).find("candidate q8_0 was not measured"),
            std::string::npos);
  const SensitivityFile partial =
      parse_sensitivity_file(map_json(entry("blk.0.attn_q.weight", 32 * 32, 0.1, 0.01)), "p.json");
  EXPECT_NE(error_of([&] { allocate_to_target(model_, base_, partial, target(8.0)); })
                .find("p.json: tensor blk.0.attn_k.weight is not in the sensitivity map"),
            std::string::npos);
  TargetOptions loose = target(12.0);
  loose.map_must_cover = false;
  EXPECT_EQ(allocate_to_target(model_, base_, partial, loose).tensors.size(), 1u);
  const SensitivityFile wrong = parse_sensitivity_file(map_json(entry("blk.9.attn_q.weight", 4, 0.1, 0.01)), "w.json");
  EXPECT_NE(error_of([&] { allocate_to_target(model_, base_, wrong, loose); })
                .find("w.json: entry blk.9.attn_q.weight is not a quantizable tensor"),
            std::string::npos);
  const SensitivityFile params = parse_sensitivity_file(map_json(entry("blk.0.attn_q.weight", 7, 0.1, 0.01)), "w.json");
  EXPECT_NE(error_of([&] { allocate_to_target(model_, base_, params, loose); }).find("has 7 params"),
            std::string::npos);
  const SensitivityFile missing = parse_sensitivity_file(
      map_json(R"({"tensor": "blk.0.attn_q.weight", "layer": 0, "role": "r", "params": 1024,
                   "kld": {"int8-pc-sym": 0.1}})"), "m.json");
  EXPECT_NE(error_of([&] { allocate_to_target(model_, base_, missing, loose); })
                .find("m.json: entry blk.0.attn_q.weight has no KLD for candidate int4-g32-asym"),
            std::string::npos);
  const SensitivityFile bytes = parse_sensitivity_file(
      map_json(R"({"tensor": "blk.0.attn_q.weight", "layer": 0, "role": "r", "params": 1024,
                   "kld": {"int8-pc-sym": 0.1, "int4-g32-asym": 0.2}, "bytes": {"int8-pc-sym": 5}})"), "b.json");
  EXPECT_NE(error_of([&] { allocate_to_target(model_, base_, bytes, loose); }).find("gives 5 bytes for int8-pc-sym"),
            std::string::npos);
}

}  // namespace
}  // namespace calq::pipeline
