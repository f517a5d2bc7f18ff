#include "model/linear_weight.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <utility>
#include <vector>

#include "core/matmul.h"
#include "formats/float_gemm.h"
#include "formats/int_dot.h"

namespace calq::model {
namespace {

// Rows per chunk of the fake quantization (a row is k values; a few rows amortise the dispatch).
constexpr Grain kActRowGrain{.min_items = 8};
// Columns per chunk of the LLM.int8() outlier scan (each chunk reads its columns of every row).
constexpr Grain kActColumnGrain{.min_items = 64};

// The product of x with the weight as stored (no activation quantization).
void plain_product(ThreadPool& pool, const float* x, int64_t ldx, int64_t m, const LinearWeight& w, float* y,
                   int64_t ldy, bool accumulate) {
  const bool fast = w.fast_kernels() && !w.act_quant().enabled();
  if (w.is_quantized()) {
    const QuantizedTensor& q = w.quantized();
    if (fast && int_matmul_supported(q)) {
      int_matmul(pool, QuantMatmulArgs{.x = x, .ldx = ldx, .w = &q, .y = y, .ldy = ldy, .m = m,
                                       .accumulate = accumulate});
      return;
    }
    const bool f16 = q.format->name() == "f16", bf16 = q.format->name() == "bf16";
    if (fast && (f16 || bf16) && float_gemm_available()) {
      count_kernel_call("float-avx512/" + q.format->name());
      float_gemm(pool, FloatGemmArgs{.x = x, .ldx = ldx, .w = q.bytes.data(), .ldw = q.cols,
                                     .type = f16 ? FloatWeight::kF16 : FloatWeight::kBF16, .y = y, .ldy = ldy,
                                     .m = m, .n = q.rows, .k = q.cols, .accumulate = accumulate});
      return;
    }
    // 4-bit table formats (nf4, fp4, mxfp4, nvfp4): decoded through their 16 levels in the float
    // kernel, the weights exactly as dequantized.
    if (fast && float_gemm_lut_supported(q) && float_gemm_available()) {
      count_kernel_call("float-avx512/" + q.format->name());
      float_gemm(pool, FloatGemmArgs{.x = x, .ldx = ldx, .type = FloatWeight::kLut4, .lut = &q, .y = y, .ldy = ldy,
                                     .m = m, .n = q.rows, .k = q.cols, .accumulate = accumulate});
      return;
    }
    count_kernel_call("float/" + q.format->name());
    matmul_nt_quantized(pool, QuantMatmulArgs{.x = x, .ldx = ldx, .w = &q, .y = y, .ldy = ldy, .m = m,
                                              .accumulate = accumulate});
    return;
  }
  const Tensor& d = w.dense();
  if (fast && float_gemm_available()) {
    count_kernel_call("float-avx512/f32");
    float_gemm(pool, FloatGemmArgs{.x = x, .ldx = ldx, .w = d.f32(), .ldw = d.dim(1), .type = FloatWeight::kF32,
                                   .y = y, .ldy = ldy, .m = m, .n = d.dim(0), .k = d.dim(1), .accumulate = accumulate});
    return;
  }
  count_kernel_call("float/f32");
  matmul_nt(pool, MatmulArgs{.x = x, .ldx = ldx, .w = d.f32(), .ldw = d.dim(1), .y = y, .ldy = ldy, .m = m,
                             .n = d.dim(0), .k = d.dim(1), .accumulate = accumulate});
}

// Real W8A8: the integer codes behind fake_quantize_activations' x̂ = q·s, for the integer kernels.
// s is the row's scale (per token: clip·absmax/qmax of x's row, as computed there; per tensor: the
// static one), and q = nearbyint(x̂ / s) recovers the code exactly (|q| ≤ 127 has 7 bits, so x̂ / s is
// within far less than ½ of it). Every block of a row carries the row's scale.
void activation_codes(ThreadPool& pool, const ActivationQuant& spec, const float* x, int64_t ldx, const float* xq,
                      int64_t m, int64_t k, int block, QuantizedActivations& qa) {
  qa.m = m;
  qa.k = k;
  qa.block = block;
  const int64_t nb = k / block;
  qa.q.resize(static_cast<size_t>(m * k));
  qa.dx.resize(static_cast<size_t>(m * nb));
  qa.sx.resize(static_cast<size_t>(m * nb));
  qa.dsx.resize(static_cast<size_t>(m * nb));
  const auto qmax = static_cast<float>(spec.qmax());
  pool.parallel_for(0, static_cast<size_t>(m), Grain{.min_items = 8}, [&](size_t r0, size_t r1) {
    for (auto r = static_cast<int64_t>(r0); r < static_cast<int64_t>(r1); ++r) {
      float s = spec.scale;
      if (spec.kind != ActivationQuant::Kind::kInt8PerTensor) {
        float absmax = 0.0f;
        for (int64_t c = 0; c < k; ++c) absmax = std::max(absmax, std::fabs(x[r * ldx + c]));
        s = spec.clip * absmax / qmax;
      }
      const bool zero = !(s > 0.0f);
      for (int64_t b = 0; b < nb; ++b) {
        int32_t sum = 0;
        for (int64_t j = b * block; j < (b + 1) * block; ++j) {
          const float q = zero ? 0.0f : std::min(qmax, std::max(-qmax, std::nearbyint(xq[r * k + j] / s)));
          qa.q[static_cast<size_t>(r * k + j)] = static_cast<int8_t>(q);
          sum += static_cast<int32_t>(q);
        }
        const auto at = static_cast<size_t>(r * nb + b);
        qa.dx[at] = zero ? 0.0f : s;
        qa.sx[at] = sum;
        qa.dsx[at] = qa.dx[at] * static_cast<float>(sum);
      }
    }
  });
}

// q = round(v / s) clamped to [−qmax, qmax]; x̂ = q · s. Counts |v / s| rounding past qmax.
inline float fake_int(float v, float s, float qmax, int64_t& saturated) {
  float q = std::nearbyint(v / s);
  if (q > qmax) {
    q = qmax;
    ++saturated;
  } else if (q < -qmax) {
    q = -qmax;
    ++saturated;
  }
  return q * s;
}

}  // namespace

int ActivationQuant::qmax() const {
  switch (kind) {
    case Kind::kNone: return 0;
    case Kind::kInt4PerToken: return 7;
    case Kind::kInt8PerToken:
    case Kind::kInt8PerTensor:
    case Kind::kLlmInt8: return 127;
  }
  return 0;
}

bool ActivationQuant::valid() const {
  switch (kind) {
    case Kind::kNone: return true;
    case Kind::kInt8PerToken:
    case Kind::kInt4PerToken: return std::isfinite(clip) && clip > 0.0f && clip <= 1.0f;
    case Kind::kInt8PerTensor: return std::isfinite(scale) && scale > 0.0f;
    case Kind::kLlmInt8: return std::isfinite(threshold) && threshold > 0.0f;
  }
  return false;
}

std::string_view activation_quant_name(ActivationQuant::Kind kind) {
  switch (kind) {
    case ActivationQuant::Kind::kNone: return "none";
    case ActivationQuant::Kind::kInt8PerToken: return "int8-token";
    case ActivationQuant::Kind::kInt8PerTensor: return "int8-tensor";
    case ActivationQuant::Kind::kLlmInt8: return "llm-int8";
    case ActivationQuant::Kind::kInt4PerToken: return "int4-token";
  }
  return "?";
}

std::optional<ActivationQuant::Kind> activation_quant_by_name(std::string_view name) {
  for (const auto kind : {ActivationQuant::Kind::kNone, ActivationQuant::Kind::kInt8PerToken,
                          ActivationQuant::Kind::kInt8PerTensor, ActivationQuant::Kind::kLlmInt8,
                          ActivationQuant::Kind::kInt4PerToken}) {
    if (activation_quant_name(kind) == name) return kind;
  }
  return std::nullopt;
}

LinearWeight::LinearWeight(Tensor dense) : dense_(std::move(dense)) {
  assert(dense_.empty() || (dense_.dtype() == DType::kF32 && dense_.rank() == 2));
}

LinearWeight::LinearWeight(QuantizedTensor quant) : quant_(std::move(quant)) { assert(quant_.format != nullptr); }

const Tensor& LinearWeight::dense() const {
  assert(!is_quantized() && "dense() on a quantized weight");
  return dense_;
}

const QuantizedTensor& LinearWeight::quantized() const {
  assert(is_quantized() && "quantized() on a dense weight");
  return quant_;
}

int64_t LinearWeight::rows() const {
  if (is_quantized()) return quant_.rows;
  return dense_.empty() ? 0 : dense_.dim(0);
}

int64_t LinearWeight::cols() const {
  if (is_quantized()) return quant_.cols;
  return dense_.empty() ? 0 : dense_.dim(1);
}

size_t LinearWeight::nbytes() const { return is_quantized() ? quant_.bytes.size() : dense_.nbytes(); }

std::string LinearWeight::format_name() const { return is_quantized() ? quant_.format->name() : "f32"; }

void LinearWeight::rebind_bytes(std::span<const std::byte> bytes, std::shared_ptr<const void> keep_alive) {
  assert(is_quantized() && bytes.size() == quant_.bytes.size());
  quant_.bytes = bytes;
  quant_.keep_alive = std::move(keep_alive);
}

bool LinearWeight::same_storage(const LinearWeight& other) const {
  if (is_quantized() != other.is_quantized()) return false;
  if (is_quantized()) return quant_.bytes.data() == other.quant_.bytes.data();
  return dense_.data() != nullptr && dense_.data() == other.dense_.data();
}

void LinearWeight::rows_f32(int64_t r0, int64_t r1, float* out) const {
  assert(0 <= r0 && r0 <= r1 && r1 <= rows());
  if (is_quantized()) {
    quant_.dequantize_rows(r0, r1, out);
    return;
  }
  std::copy(dense_.f32() + r0 * cols(), dense_.f32() + r1 * cols(), out);
}

Tensor LinearWeight::to_dense(ThreadPool& pool) const {
  if (!is_quantized()) return dense_;
  Tensor out = Tensor::zeros(DType::kF32, {quant_.rows, quant_.cols});
  quant_.dequantize(pool, out.mutable_f32());
  return out;
}

void LinearWeight::set_act_quant(const ActivationQuant& spec) {
  assert(spec.valid() && "invalid activation quantization parameters");
  act_quant_ = spec;
  counters_ = spec.enabled() ? std::make_shared<Counters>() : nullptr;
}

ActivationQuantCounts LinearWeight::act_quant_counts() const {
  if (!counters_) return {};
  return {.calls = counters_->calls.load(),
          .rows = counters_->rows.load(),
          .columns = counters_->columns.load(),
          .outlier_columns = counters_->outlier_columns.load(),
          .saturated = counters_->saturated.load()};
}

void LinearWeight::reset_act_quant_counts() const {
  if (!counters_) return;
  counters_->calls = 0;
  counters_->rows = 0;
  counters_->columns = 0;
  counters_->outlier_columns = 0;
  counters_->saturated = 0;
}

int64_t fake_quantize_activations(ThreadPool& pool, const ActivationQuant& spec, const float* x, int64_t ldx,
                                  int64_t m, int64_t k, float* xq, int64_t* saturated) {
  assert(spec.enabled() && spec.valid() && ldx >= k);
  using Kind = ActivationQuant::Kind;
  // LLM.int8(): a column is an outlier when any row exceeds the threshold. Column chunks each
  // scan all rows of their columns: the flags do not depend on the split.
  std::vector<uint8_t> outlier;
  int64_t n_outliers = 0;
  if (spec.kind == Kind::kLlmInt8) {
    outlier.assign(static_cast<size_t>(k), 0);
    pool.parallel_for(0, static_cast<size_t>(k), kActColumnGrain, [&](size_t c0, size_t c1) {
      for (int64_t r = 0; r < m; ++r) {
        const float* xr = x + r * ldx;
        for (size_t c = c0; c < c1; ++c) {
          if (std::fabs(xr[c]) > spec.threshold) outlier[c] = 1;
        }
      }
    });
    for (const uint8_t o : outlier) n_outliers += o;
  }
  // Per-row work; saturation counts per chunk are integers, summed in any order.
  const auto qmax = static_cast<float>(spec.qmax());
  // Per-token kinds scale by clip · absmax; LLM.int8() always by absmax (clip stays 1 there).
  const float clip = spec.per_token() ? spec.clip : 1.0f;
  std::atomic<int64_t> clipped{0};
  pool.parallel_for(0, static_cast<size_t>(m), kActRowGrain, [&](size_t r0, size_t r1) {
    int64_t chunk_clipped = 0;
    for (auto r = static_cast<int64_t>(r0); r < static_cast<int64_t>(r1); ++r) {
      const float* xr = x + r * ldx;
      float* qr = xq + r * k;
      if (spec.kind == Kind::kInt8PerTensor) {
        for (int64_t c = 0; c < k; ++c) qr[c] = fake_int(xr[c], spec.scale, qmax, chunk_clipped);
        continue;
      }
      const bool split = spec.kind == Kind::kLlmInt8 && n_outliers > 0;
      float absmax = 0.0f;
      for (int64_t c = 0; c < k; ++c) {
        if (!split || outlier[static_cast<size_t>(c)] == 0) absmax = std::max(absmax, std::fabs(xr[c]));
      }
      // clip == 1 multiplies by exactly 1: the unclipped scale is absmax / qmax bit for bit.
      const float s = clip * absmax / qmax;
      if (!(s > 0.0f)) {  // ±0 (or NaN) values only: copied, so a NaN still shows
        std::copy(xr, xr + k, qr);
        continue;
      }
      // Without clipping a per-token scale cannot saturate; with clip < 1 the row's largest do.
      for (int64_t c = 0; c < k; ++c) {
        qr[c] = split && outlier[static_cast<size_t>(c)] != 0 ? xr[c] : fake_int(xr[c], s, qmax, chunk_clipped);
      }
    }
    clipped += chunk_clipped;
  });
  if (saturated != nullptr) *saturated += clipped.load();
  return n_outliers;
}

void linear_nt(ThreadPool& pool, const float* x, int64_t ldx, int64_t m, const LinearWeight& w, float* y, int64_t ldy,
               bool accumulate) {
  if (w.act_quant_.enabled()) {
    const int64_t k = w.cols();
    std::vector<float> xq(static_cast<size_t>(m * k));
    int64_t saturated = 0;
    const int64_t outliers = fake_quantize_activations(pool, w.act_quant_, x, ldx, m, k, xq.data(), &saturated);
    LinearWeight::Counters& c = *w.counters_;
    c.calls += 1;
    c.rows += m;
    c.columns += k;
    c.outlier_columns += outliers;
    c.saturated += saturated;
    // Real W8A8 on the fast kernels: the same integer codes multiplied as integers (LLM.int8()'s
    // float outlier columns excluded). Otherwise x̂ times the weight in float (the simulation).
    if (w.fast_kernels() && w.is_quantized() && w.act_quant_.kind != ActivationQuant::Kind::kLlmInt8 &&
        int_matmul_supported(w.quantized())) {
      thread_local QuantizedActivations codes;
      activation_codes(pool, w.act_quant_, x, ldx, xq.data(), m, k, w.quantized().format->int_row_codec()->block(),
                       codes);
      int_matmul_prequantized(pool, codes, QuantMatmulArgs{.x = nullptr, .ldx = k, .w = &w.quantized(), .y = y,
                                                           .ldy = ldy, .m = m, .accumulate = accumulate});
      return;
    }
    plain_product(pool, xq.data(), k, m, w, y, ldy, accumulate);
    return;
  }
  plain_product(pool, x, ldx, m, w, y, ldy, accumulate);
}

}  // namespace calq::model
