#include "quant/flatquant.h"

#include <fmt/format.h>

#include <algorithm>
#include <cassert>
#include <chrono>
#include <cmath>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "grad/fake_quant_int.h"
#include "grad/fake_quant_learn.h"
#include "grad/flat_ops.h"
#include "grad/layer.h"
#include "grad/loss.h"
#include "grad/optim.h"
#include "quant/qat_trainable.h"

namespace calq::quant {
namespace {

using model::InputSite;
using model::TensorRole;

size_t sz(int64_t n) { return static_cast<size_t>(n); }

// One site's trained parameters and their gradients.
struct Site {
  InputSite site = InputSite::kAttnIn;
  std::string context;  // "layer 3 site attn_in"
  int64_t width = 0, n1 = 0, n2 = 0;
  grad::SvdFactor<float> fa, fb;
  std::vector<float> pa, pa_it, pb, pb_it;      // A, A⁻ᵀ, B, B⁻ᵀ of the current parameters
  std::vector<float> dpa, dpa_it, dpb, dpb_it;  // their gradients, summed over the step
  std::vector<float> g_xu_a, g_xv_a, g_sig_a, g_xu_b, g_xv_b, g_sig_b;
  bool smooth = false;
  std::vector<float> s, ds;  // smoothing: the site reads x / s
  bool act = false;
  int bits = 0;
  std::vector<float> gamma{grad::kLwcInit}, dgamma{0.0f};

  void compose() {
    fa.compose(pa.data(), pa_it.data(), context + ": transform factor A");
    fb.compose(pb.data(), pb_it.data(), context + ": transform factor B");
  }
};

// One consumer linear: its float weight and learned clipping.
struct Linear {
  TensorRole role = TensorRole::kAttnQ;
  std::string name;
  int64_t rows = 0, cols = 0;
  Site* site = nullptr;
  grad::IntLayout layout;
  std::vector<float> w;       // the float weight (after any scale migration)
  std::vector<float> ws, wt;  // W·diag(s), W̃ = W·diag(s)·T⁻ᵀ
  std::vector<float> a, b, ga, gb;  // LWC logits (b: asym only) and gradients
  std::vector<float> d_wt, d_ws;
};

// x → (x / s)·(A ⊗ B) → the activation fake quantization, as SiteMaps of the trainable layer.
class Maps final : public grad::SiteMaps<float> {
 public:
  explicit Maps(std::vector<Site>& sites) : sites_(sites) {}
  bool maps(InputSite site) const override { return find(site) != nullptr; }

  void forward(ThreadPool& pool, InputSite id, const float* x, int64_t rows, int64_t width, float* y) const override {
    const Site& s = *find(id);
    std::vector<float> xs = smoothed(s, x, rows, width);
    if (!s.act) {
      grad::kron_rows_forward(pool, xs.data(), rows, s.n1, s.n2, s.pa.data(), s.pb.data(), y);
      return;
    }
    std::vector<float> k(xs.size());
    grad::kron_rows_forward(pool, xs.data(), rows, s.n1, s.n2, s.pa.data(), s.pb.data(), k.data());
    grad::lac_forward(pool, k.data(), rows, width, s.bits, s.gamma[0], y);
  }

  void backward(ThreadPool& pool, InputSite id, const float* x, int64_t rows, int64_t width, const float* dy,
                float* dx) override {
    Site& s = *find_mut(id);
    const std::vector<float> xs = smoothed(s, x, rows, width);
    std::vector<float> dk(dy, dy + rows * width);
    if (s.act) {
      std::vector<float> k(xs.size());
      grad::kron_rows_forward(pool, xs.data(), rows, s.n1, s.n2, s.pa.data(), s.pb.data(), k.data());
      grad::lac_backward(pool, k.data(), rows, width, s.bits, s.gamma[0], dy, dk.data(), s.dgamma.data());
    }
    grad::kron_rows_backward(pool, xs.data(), rows, s.n1, s.n2, s.pa.data(), s.pb.data(), dk.data(), dx,
                             s.dpa.data(), s.dpb.data());
    if (!s.smooth) return;
    // d(x / s): dx /= s; ds_c −= Σ_rows dxs_c · x_c / s_c² (in double, row order per column).
    std::vector<double> acc(sz(width), 0.0);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < width; ++c) {
        const double g = dx[r * width + c];
        acc[sz(c)] -= g * x[r * width + c] / (static_cast<double>(s.s[sz(c)]) * s.s[sz(c)]);
      }
    }
    for (int64_t c = 0; c < width; ++c) {
      s.ds[sz(c)] += static_cast<float>(acc[sz(c)]);
      for (int64_t r = 0; r < rows; ++r) dx[r * width + c] /= s.s[sz(c)];
    }
  }

 private:
  const Site* find(InputSite id) const {
    for (const Site& s : sites_)
      if (s.site == id) return &s;
    return nullptr;
  }
  Site* find_mut(InputSite id) {
    for (Site& s : sites_)
      if (s.site == id) return &s;
    return nullptr;
  }
  static std::vector<float> smoothed(const Site& s, const float* x, int64_t rows, int64_t width) {
    std::vector<float> xs(x, x + rows * width);
    if (s.smooth) {
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < width; ++c) xs[sz(r * width + c)] /= s.s[sz(c)];
    }
    return xs;
  }
  std::vector<Site>& sites_;
};

// The consumers' fake-quantized weights Q_w(W·diag(s)·T⁻ᵀ) into the layer's parameters.
void weights_forward(ThreadPool& pool, std::vector<Linear>& lins, grad::LayerParams<float>& p) {
  for (Linear& l : lins) {
    const Site& s = *l.site;
    l.ws = l.w;
    if (s.smooth) {
      for (int64_t r = 0; r < l.rows; ++r)
        for (int64_t c = 0; c < l.cols; ++c) l.ws[sz(r * l.cols + c)] *= s.s[sz(c)];
    }
    l.wt.resize(l.w.size());
    grad::kron_rows_forward(pool, l.ws.data(), l.rows, s.n1, s.n2, s.pa_it.data(), s.pb_it.data(), l.wt.data());
    grad::lwc_forward<float>(pool, l.layout, l.rows, l.cols, l.wt.data(), l.a, l.b,
                             detail::linear_of(p, l.role).data(), l.name);
  }
}

// dL/dŴ of every consumer back to its clipping logits, the factors' inverse-transposes and s.
void weights_backward(ThreadPool& pool, std::vector<Linear>& lins, grad::LayerGrads<float>& g) {
  for (Linear& l : lins) {
    Site& s = *l.site;
    l.d_wt.resize(l.w.size());
    l.d_ws.resize(l.w.size());
    std::fill(l.ga.begin(), l.ga.end(), 0.0f);
    std::fill(l.gb.begin(), l.gb.end(), 0.0f);
    grad::lwc_backward<float>(pool, l.layout, l.rows, l.cols, l.wt.data(), l.a, l.b,
                              detail::linear_of(g, l.role).data(), l.d_wt.data(), l.ga, l.gb);
    grad::kron_rows_backward(pool, l.ws.data(), l.rows, s.n1, s.n2, s.pa_it.data(), s.pb_it.data(), l.d_wt.data(),
                             l.d_ws.data(), s.dpa_it.data(), s.dpb_it.data());
    if (!s.smooth) continue;
    std::vector<double> acc(sz(l.cols), 0.0);
    for (int64_t r = 0; r < l.rows; ++r)
      for (int64_t c = 0; c < l.cols; ++c)
        acc[sz(c)] += static_cast<double>(l.d_ws[sz(r * l.cols + c)]) * l.w[sz(r * l.cols + c)];
    for (int64_t c = 0; c < l.cols; ++c) s.ds[sz(c)] += static_cast<float>(acc[sz(c)]);
  }
}

// Everything trained, to restore the start when training does not help.
struct Snapshot {
  std::vector<std::vector<float>> values;
};

std::vector<std::vector<float>*> trained_values(std::vector<Site>& sites, std::vector<Linear>& lins) {
  std::vector<std::vector<float>*> v;
  for (Site& s : sites) {
    for (auto* x : {&s.fa.xu, &s.fa.xv, &s.fa.sigma, &s.fb.xu, &s.fb.xv, &s.fb.sigma, &s.s, &s.gamma}) v.push_back(x);
  }
  for (Linear& l : lins) {
    v.push_back(&l.a);
    v.push_back(&l.b);
  }
  return v;
}

// The start of a site: random orthogonal factors (P = U₀·V₀ᵀ with independent U₀, V₀), s from
// the statistics (SmoothQuant-style), the activation clip at σ(4).
Site make_site(const LayerTransformTarget& t, const TransformSite& ts, const FlatQuantOptions& o,
               const std::vector<Linear>& lins, uint64_t seed) {
  const model::ModelConfig& c = *t.config;
  Site s;
  s.site = ts.site;
  s.context = fmt::format("layer {} site {}", t.layer, model::site_name(ts.site));
  const model::SiteWiring* wiring = nullptr;
  for (const model::SiteWiring& w : model::block_topology(c).layer_sites)
    if (w.site == ts.site) wiring = &w;
  assert(wiring != nullptr);
  s.width = model::site_width(*wiring, c);
  // The attention output is heads ⊗ head_dim unless n1 is asked for.
  const int64_t n1 = o.n1 > 0 ? o.n1 : (ts.site == InputSite::kAttnOut ? c.num_heads : 0);
  model::KronShape shape;
  try {
    shape = model::kron_factors(s.width, n1);
  } catch (const Error& e) {
    fail(e.kind(), "{}: {} (option n1)", s.context, e.what());
  }
  s.n1 = shape.n1;
  s.n2 = shape.n2;
  for (auto [f, n, k] : {std::tuple{&s.fa, s.n1, 0}, std::tuple{&s.fb, s.n2, 2}}) {
    *f = grad::SvdFactor<float>::identity(n, seed + k);
    f->v0 = grad::random_orthogonal(n, seed + k + 1);
  }
  for (auto* v : {&s.pa, &s.pa_it, &s.dpa, &s.dpa_it, &s.g_xu_a, &s.g_xv_a}) v->assign(sz(s.n1 * s.n1), 0.0f);
  for (auto* v : {&s.pb, &s.pb_it, &s.dpb, &s.dpb_it, &s.g_xu_b, &s.g_xv_b}) v->assign(sz(s.n2 * s.n2), 0.0f);
  s.g_sig_a.assign(sz(s.n1), 0.0f);
  s.g_sig_b.assign(sz(s.n2), 0.0f);
  s.smooth = o.smooth && ts.foldable && ts.stats != nullptr && !ts.stats->absmax.empty();
  s.s.assign(sz(s.width), 1.0f);
  s.ds.assign(sz(s.width), 0.0f);
  if (s.smooth) {
    std::vector<float> wmax(sz(s.width), 0.0f);
    for (const Linear& l : lins) {
      if (l.site->site != ts.site) continue;
      for (int64_t r = 0; r < l.rows; ++r)
        for (int64_t col = 0; col < l.cols; ++col)
          wmax[sz(col)] = std::max(wmax[sz(col)], std::fabs(l.w[sz(r * l.cols + col)]));
    }
    for (int64_t col = 0; col < s.width; ++col) {
      const double x = ts.stats->absmax[sz(col)], w = wmax[sz(col)];
      // A channel never seen or never weighted keeps s = 1 (nothing to balance).
      if (x > 0 && w > 0)
        s.s[sz(col)] = static_cast<float>(std::clamp(std::pow(x, o.smooth_alpha) / std::pow(w, 1 - o.smooth_alpha),
                                                     1e-5, 1e5));
    }
  }
  s.act = t.activation.enabled();
  if (s.act) s.bits = t.activation.kind == model::ActivationQuant::Kind::kInt4PerToken ? 4 : 8;
  // Start from the scheme's clip when it gives one below 1 (σ⁻¹(clip)), else σ(4). Without
  // act_clip the clip is not learned and training runs at the scheme's own (σ(30) is 1 in float).
  if (s.act && t.activation.clip < 1.0f) {
    const double clip = t.activation.clip;
    s.gamma[0] = static_cast<float>(std::log(clip / (1 - clip)));
  } else if (s.act && !o.act_clip) {
    s.gamma[0] = 30.0f;
  }
  return s;
}

// Mean squared error over all samples of the layer with the current parameters.
double full_loss(ThreadPool& pool, const LayerTransformTarget& t, std::vector<Site>& sites, std::vector<Linear>& lins,
                 grad::LayerParams<float>& p, int64_t batch, std::optional<grad::LayerWorkspace<float>>& ws) {
  for (Site& s : sites) s.compose();
  weights_forward(pool, lins, p);
  Maps maps(sites);
  const int64_t stride = t.seq_len * t.config->hidden_size;
  double sum = 0;
  std::vector<float> h;
  for (int64_t s0 = 0; s0 < t.samples; s0 += batch) {
    const int64_t b = std::min(batch, t.samples - s0);
    if (!ws || ws->batch() != b) ws.emplace(*t.config, t.seq_len, b);
    h.assign(t.inputs.begin() + s0 * stride, t.inputs.begin() + (s0 + b) * stride);
    grad::layer_forward(pool, *t.config, t.layer, p, h.data(), *ws, &maps);
    sum += grad::mse<float>(pool, h.data(), t.targets.data() + s0 * stride, b * stride, nullptr) *
           static_cast<double>(b);
  }
  return sum / static_cast<double>(t.samples);
}

LayerTransform run(const LayerTransformTarget& t, const FlatQuantOptions& o, ThreadPool& pool) {
  const model::ModelConfig& config = *t.config;
  if (t.samples < 1) fail(ErrorKind::kInvalidArgument, "no calibration samples to train on");
  if (t.activation.enabled() && !t.activation.per_token())
    fail(ErrorKind::kUnsupported, "activation scheme {}: flatquant learns per-token activation clipping; use "
         "int4-token or int8-token", model::activation_quant_name(t.activation.kind));
  const int64_t hs = config.hidden_size, stride = t.seq_len * hs;
  assert(static_cast<int64_t>(t.inputs.size()) == t.samples * stride && t.targets.size() == t.inputs.size());
  const int64_t batch = std::min(o.batch, t.samples);

  // The linears, their sites, and the sites' starts.
  std::vector<Linear> lins;
  std::vector<Site> sites;
  sites.reserve(t.sites.size());  // Linear::site points into it
  for (const TransformSite& ts : t.sites) {
    sites.push_back({.site = ts.site});
    for (const TensorRole role : ts.consumers) {
      const ReconstructionLinear* lin = nullptr;
      for (const ReconstructionLinear& l : t.linears)
        if (l.role == role) lin = &l;
      assert(lin != nullptr);
      if (lin->format == nullptr || !grad::is_int_format(*lin->format))
        fail(ErrorKind::kUnsupported, "tensor {}: flatquant learns weight clipping in int formats; {} is not one",
             lin->name, lin->format == nullptr ? std::string("f32") : lin->format->name());
      const Tensor& dense = t.weights->linear(role).dense();
      Linear l{.role = role, .name = std::string(lin->name), .rows = dense.dim(0), .cols = dense.dim(1),
               .site = &sites.back(), .layout = grad::int_layout(*lin->format)};
      l.w.assign(dense.f32(), dense.f32() + dense.numel());
      const int64_t groups = l.layout.num_groups(l.rows, l.cols);
      l.a.assign(sz(groups), grad::kLwcInit);
      l.ga.assign(sz(groups), 0.0f);
      if (!l.layout.symmetric) {
        l.b.assign(sz(groups), grad::kLwcInit);
        l.gb.assign(sz(groups), 0.0f);
      }
      lins.push_back(std::move(l));
    }
  }
  for (size_t i = 0; i < t.sites.size(); ++i)
    sites[i] = make_site(t, t.sites[i], o, lins, o.seed * 1000003 + static_cast<uint64_t>(t.layer) * 101 + i * 7);

  grad::LayerParams<float> p = grad::LayerParams<float>::from_weights(config, *t.weights, pool);
  std::optional<grad::LayerWorkspace<float>> ws;
  const std::vector<std::vector<float>*> values = trained_values(sites, lins);
  Snapshot start;
  for (const auto* v : values) start.values.push_back(*v);
  const double loss_start = full_loss(pool, t, sites, lins, p, batch, ws);

  // Optimizer groups: factors and smoothing at lr, clips at lr × clip_lr_scale.
  std::vector<grad::ParamGroup> groups;
  const auto add = [&](const std::string& name, std::vector<float>& param, std::vector<float>& g, double scale) {
    if (!param.empty()) groups.push_back({.name = name, .param = param, .grad = g, .lr_scale = scale, .decay = false});
  };
  for (Site& s : sites) {
    add(s.context + " A.xu", s.fa.xu, s.g_xu_a, 1);
    add(s.context + " A.xv", s.fa.xv, s.g_xv_a, 1);
    add(s.context + " A.sigma", s.fa.sigma, s.g_sig_a, 1);
    add(s.context + " B.xu", s.fb.xu, s.g_xu_b, 1);
    add(s.context + " B.xv", s.fb.xv, s.g_xv_b, 1);
    add(s.context + " B.sigma", s.fb.sigma, s.g_sig_b, 1);
    if (s.smooth) add(s.context + " smoothing", s.s, s.ds, 1);
    if (s.act && o.act_clip) add(s.context + " activation clip", s.gamma, s.dgamma, o.clip_lr_scale);
  }
  if (o.weight_clip) {
    for (Linear& l : lins) {
      add(l.name + " clip", l.a, l.ga, o.clip_lr_scale);
      add(l.name + " clip min", l.b, l.gb, o.clip_lr_scale);
    }
  }
  std::vector<size_t> sizes;
  for (const auto& g : groups) sizes.push_back(g.param.size());
  grad::AdamW adamw({.lr = o.lr, .weight_decay = o.weight_decay}, sizes);
  const int64_t steps_per_epoch = (t.samples + batch - 1) / batch;
  const int64_t total_steps = o.epochs * steps_per_epoch;
  const grad::CosineSchedule schedule({.lr = o.lr, .total_steps = std::max<int64_t>(total_steps, 1),
                                       .min_lr = o.lr * 1e-3});

  LayerTransform out;
  grad::LayerGrads<float> grads = grad::LayerParams<float>::zeros(config);
  Maps maps(sites);
  std::vector<float> x, y, h, d_out, d_in;
  std::vector<int64_t> order(sz(t.samples));
  for (int64_t i = 0; i < t.samples; ++i) order[sz(i)] = i;
  std::mt19937_64 rng(o.seed);
  const auto t0 = std::chrono::steady_clock::now();
  int64_t step = 0;
  for (int64_t epoch = 0; epoch < o.epochs; ++epoch) {
    detail::shuffle(order, rng);
    for (int64_t s0 = 0; s0 < t.samples; s0 += batch, ++step) {
      const int64_t b = std::min(batch, t.samples - s0);
      const size_t n = sz(b * stride);
      x.resize(n);
      y.resize(n);
      for (int64_t k = 0; k < b; ++k) {
        const int64_t s = order[sz(s0 + k)];
        std::memcpy(&x[sz(k * stride)], t.inputs.data() + s * stride, sizeof(float) * sz(stride));
        std::memcpy(&y[sz(k * stride)], t.targets.data() + s * stride, sizeof(float) * sz(stride));
      }
      for (Site& s : sites) {
        s.compose();
        for (auto* v : {&s.dpa, &s.dpa_it, &s.dpb, &s.dpb_it, &s.g_xu_a, &s.g_xv_a, &s.g_sig_a, &s.g_xu_b, &s.g_xv_b,
                        &s.g_sig_b, &s.ds, &s.dgamma})
          std::fill(v->begin(), v->end(), 0.0f);
      }
      weights_forward(pool, lins, p);
      if (!ws || ws->batch() != b) ws.emplace(config, t.seq_len, b);
      h = x;
      grad::layer_forward(pool, config, t.layer, p, h.data(), *ws, &maps);
      d_out.resize(n);
      d_in.resize(n);
      const double loss = grad::mse<float>(pool, h.data(), y.data(), static_cast<int64_t>(n), d_out.data());
      if (!std::isfinite(loss)) fail(ErrorKind::kInvalidArgument, "step {}: the loss is {}", step + 1, loss);
      for (auto& [role, v] : grads.tensors()) std::fill(v->begin(), v->end(), 0.0f);
      grad::layer_backward(pool, config, t.layer, p, x.data(), d_out.data(), d_in.data(), grads, *ws, &maps);
      weights_backward(pool, lins, grads);
      for (Site& s : sites) {
        s.fa.backward(s.dpa.data(), s.dpa_it.data(), s.g_xu_a.data(), s.g_xv_a.data(), s.g_sig_a.data(),
                      s.context + ": transform factor A");
        s.fb.backward(s.dpb.data(), s.dpb_it.data(), s.g_xu_b.data(), s.g_xv_b.data(), s.g_sig_b.data(),
                      s.context + ": transform factor B");
      }
      adamw.step(groups, schedule.lr(step));
      for (const Site& s : sites) {
        s.fa.check(fmt::format("step {}: {}: transform factor A", step + 1, s.context), o.max_condition);
        s.fb.check(fmt::format("step {}: {}: transform factor B", step + 1, s.context), o.max_condition);
      }
      out.event.curve.push_back(loss);
      if (t.progress != nullptr && *t.progress) {
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        (*t.progress)({.step = "flatquant", .layer = t.layer, .done = step + 1, .total = total_steps, .loss = loss,
                       .seconds = secs,
                       .eta_seconds = secs / static_cast<double>(step + 1) * static_cast<double>(total_steps - step - 1)});
      }
    }
  }

  const double loss_trained = full_loss(pool, t, sites, lins, p, batch, ws);
  const bool kept = loss_trained < loss_start;
  if (!kept) {
    for (size_t i = 0; i < values.size(); ++i) *values[i] = start.values[i];
    for (Site& s : sites) s.compose();
    weights_forward(pool, lins, p);
  }
  out.event = layer_training_event(true, kept, loss_start, loss_trained, std::move(out.event.curve));

  // The result: per site the factors, the smoothing and the clip; per consumer W̃ clamped to the
  // learned clipping range of each of its groups.
  for (const Site& s : sites) {
    out.sites.push_back({.site = s.site, .smoothing = s.smooth ? s.s : std::vector<float>(), .n1 = s.n1, .n2 = s.n2,
                         .a = s.pa, .b = s.pb,
                         .act_clip = s.act && o.act_clip ? grad::lac_clip(s.gamma[0]) : 0.0f});
  }
  for (Linear& l : lins) {
    const std::vector<QuantParams> params = grad::lwc_quant_params(l.layout, l.rows, l.cols, l.wt.data(), l.a, l.b);
    Tensor w = Tensor::zeros(DType::kF32, {l.rows, l.cols});
    float* dst = w.mutable_f32();
    const auto qmin = static_cast<float>(l.layout.grid.qmin), qmax = static_cast<float>(l.layout.grid.qmax);
    for (int64_t r = 0; r < l.rows; ++r) {
      for (int64_t c = 0; c < l.cols; ++c) {
        const QuantParams& q = params[sz(l.layout.group_of(r, c, l.cols))];
        const float lo = q.scale * (qmin - static_cast<float>(q.zero_point));
        const float hi = q.scale * (qmax - static_cast<float>(q.zero_point));
        dst[r * l.cols + c] = std::clamp(l.wt[sz(r * l.cols + c)], lo, hi);
      }
    }
    out.weights.emplace_back(l.role, std::move(w));
  }
  return out;
}

}  // namespace

LayerTransform flatquant_layer(const LayerTransformTarget& t, const FlatQuantOptions& o, ThreadPool& pool) {
  try {
    return run(t, o, pool);
  } catch (const Error& e) {
    fail(e.kind(), "flatquant layer {}: {}", t.layer, e.what());
  }
}

void transform_input_stats(InputStats& stats, const model::KronTransform& t) {
  const int64_t n = stats.cols;
  stats.absmax.clear();
  stats.mean_abs.clear();
  if (stats.hessian.empty()) {
    stats.mean_sq.clear();
    return;
  }
  assert(t.width() == n);
  // Tᵀ·H·T: T applied to H's rows (H·T, H symmetric), then to the rows of the transpose.
  const auto n1 = t.n1(), n2 = t.n2();
  std::vector<double> a(t.a().f32(), t.a().f32() + n1 * n1), b(t.b().f32(), t.b().f32() + n2 * n2);
  const auto rows_times_t = [&](const std::vector<double>& m) {
    std::vector<double> r(m.size(), 0.0);
    for (int64_t i = 0; i < n; ++i) {
      const double* x = &m[sz(i * n)];
      std::vector<double> xb(sz(n), 0.0);  // X·B
      for (int64_t p = 0; p < n1; ++p)
        for (int64_t k = 0; k < n2; ++k)
          for (int64_t l = 0; l < n2; ++l) xb[sz(p * n2 + l)] += x[p * n2 + k] * b[sz(k * n2 + l)];
      double* y = &r[sz(i * n)];
      for (int64_t j = 0; j < n1; ++j)
        for (int64_t p = 0; p < n1; ++p)
          for (int64_t l = 0; l < n2; ++l) y[j * n2 + l] += a[sz(p * n1 + j)] * xb[sz(p * n2 + l)];
    }
    return r;
  };
  std::vector<double> ht = rows_times_t(stats.hessian);  // H·T
  std::vector<double> tr(ht.size());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) tr[sz(j * n + i)] = ht[sz(i * n + j)];
  std::vector<double> h2 = rows_times_t(tr);  // (H·T)ᵀ·T = Tᵀ·H·T
  for (int64_t i = 0; i < n; ++i)  // exactly symmetric
    for (int64_t j = 0; j < i; ++j) h2[sz(i * n + j)] = h2[sz(j * n + i)] = 0.5 * (h2[sz(i * n + j)] + h2[sz(j * n + i)]);
  if (!stats.mean_sq.empty()) {
    // mean_sq is the Hessian's diagonal up to one factor (a sum or a mean): carry it over.
    double trace = 0, sum = 0;
    for (int64_t i = 0; i < n; ++i) {
      trace += stats.hessian[sz(i * n + i)];
      sum += stats.mean_sq[sz(i)];
    }
    const double k = trace > 0 ? sum / trace : 0.0;
    for (int64_t i = 0; i < n; ++i) stats.mean_sq[sz(i)] = static_cast<float>(h2[sz(i * n + i)] * k);
  }
  stats.hessian = std::move(h2);
}

}  // namespace calq::quant
