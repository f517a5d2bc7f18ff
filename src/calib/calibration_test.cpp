#include "calib/calibration.h"

#include <gtest/gtest.h>

#include <vector>

#include "core/error.h"
#include "model/tiny_model_testutil.h"
#include "support/shared_dir.h"

namespace calq::calib {
namespace {

TEST(CalibrationWindows, EvenlySpacedOverTheGptqGrid) {
  // 1000 tokens, ctx 100: 10 windows; 4 samples take windows 0, 2, 5, 7.
  EXPECT_EQ(calibration_windows(1000, 100, 4), (std::vector<int64_t>{0, 200, 500, 700}));
  EXPECT_EQ(calibration_windows(1099, 100, 10).size(), 10u);
  EXPECT_EQ(calibration_windows(1099, 100, 10).back(), 900);
  EXPECT_EQ(calibration_windows(250, 100, 1), (std::vector<int64_t>{0}));
}

TEST(CalibrationWindows, BadOptionsNameTheFlag) {
  const auto message = [](int64_t n, int64_t ctx, int64_t samples) {
    try {
      calibration_windows(n, ctx, samples);
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(1000, 100, 0).find("samples must be at least 1"), std::string::npos);
  EXPECT_NE(message(1000, 1, 1).find("ctx must be at least 2"), std::string::npos);
  EXPECT_NE(message(99, 100, 1).find("fewer than one window"), std::string::npos);
  EXPECT_NE(message(1000, 100, 11).find("samples 11 asks for more"), std::string::npos);
}

class CalibrationPass : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::temp_dir("calib_pass");
    model::testutil::write_tiny_model(dir_, {.tied = true, .layers = 2});
    ThreadPool pool(1);
    model_ = model::load_hf_model(dir_, pool);
    for (int i = 0; i < 100; ++i) ids_.push_back(static_cast<int32_t>((i * 37 + 11) % 61));
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
  model::Model model_;
  std::vector<int32_t> ids_;
};

void expect_same(const ActivationObserver& a, const ActivationObserver& b) {
  ASSERT_EQ(a.inputs().size(), b.inputs().size());
  for (size_t i = 0; i < a.inputs().size(); ++i) {
    const auto& x = a.inputs()[i];
    const auto& y = b.inputs()[i];
    EXPECT_EQ(x.layer, y.layer);
    EXPECT_EQ(x.role, y.role);
    EXPECT_EQ(x.rows, y.rows);
    EXPECT_EQ(x.absmax, y.absmax) << i;
    EXPECT_EQ(x.sum_abs, y.sum_abs) << i;
    EXPECT_EQ(x.above, y.above) << i;
  }
}

TEST_F(CalibrationPass, LinearInputsMatchTheFullForwardPass) {
  ThreadPool pool(2);
  const std::span<const int32_t> seq(ids_.data(), 16);
  ActivationObserver via_forward, via_pass;
  const model::LinearHook h1 = via_forward.hook();
  model::forward(model_, seq, pool, &h1);
  run_linear_inputs(model_, seq, via_pass.hook(), pool);
  EXPECT_EQ(via_pass.inputs().size(), 2u * 7u + 1u);
  expect_same(via_forward, via_pass);
}

TEST_F(CalibrationPass, SameBitsForAnyThreadCountAndEqualToSerialWindows) {
  ThreadPool one(1), three(3);
  int64_t last_done = 0;
  const ActivationPassOptions opts{.ctx = 12, .samples = 5, .on_progress = [&](int64_t d, int64_t t) {
                                     EXPECT_EQ(t, 5);
                                     last_done = d;
                                   }};
  const ActivationObserver a = observe_activations(model_, ids_, opts, one);
  EXPECT_EQ(last_done, 5);
  const ActivationObserver b = observe_activations(model_, ids_, opts, three);
  expect_same(a, b);
  // The same windows observed one by one, in order.
  ActivationObserver serial;
  for (const int64_t start : calibration_windows(100, 12, 5)) {
    ActivationObserver w;
    run_linear_inputs(model_, std::span<const int32_t>(ids_).subspan(static_cast<size_t>(start), 12), w.hook(), one);
    serial.merge(w);
  }
  expect_same(a, serial);
  EXPECT_EQ(a.inputs()[0].rows, 5 * 12);
  EXPECT_EQ(a.calls(), 5 * (2 * 7 + 1));
}

}  // namespace
}  // namespace calq::calib
