#include "calib/collectors.h"

#include <cblas.h>

#include <algorithm>
#include <array>
#include <cassert>
#include <cmath>
#include <functional>

#include "core/error.h"
#include "core/matmul.h"

namespace calq::calib {
namespace {

using model::TensorRole;

constexpr std::array<std::string_view, kNumStatKinds> kStatNames = {"absmax", "mean_abs", "mean_sq",
                                                                    "histogram", "hessian"};

std::string valid_stat_names() {
  std::string out;
  for (const auto name : kStatNames) {
    if (!out.empty()) out += ", ";
    out += name;
  }
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

InputSite input_site(TensorRole linear_role, const model::BlockTopology& block) {
  assert(model::is_linear(linear_role));
  const model::SiteWiring* w = model::site_of(block, linear_role);
  assert(w != nullptr && "input_site: the block has no site for this role");
  return w->site;
}

std::span<const TensorRole> site_roles(InputSite site, const model::BlockTopology& block) {
  const model::SiteWiring* w = model::find_site(block, site);
  assert(w != nullptr && "site_roles: the block has no such site");
  return w->consumers;
}

std::string_view stat_name(StatKind kind) {
  const auto i = static_cast<size_t>(kind);
  assert(i < kStatNames.size());
  return kStatNames[i];
}

std::optional<StatKind> stat_by_name(std::string_view name) {
  for (size_t i = 0; i < kStatNames.size(); ++i) {
    if (kStatNames[i] == name) return static_cast<StatKind>(i);
  }
  return std::nullopt;
}

// ---- StatSet ----

StatSet StatSet::defaults() {
  return StatSet{}.with(StatKind::kAbsMax).with(StatKind::kMeanAbs).with(StatKind::kMeanSq).with(
      StatKind::kHistogram);
}

StatSet StatSet::all() { return defaults().with(StatKind::kHessian); }

StatSet StatSet::parse(std::string_view list) {
  StatSet set;
  size_t start = 0;
  while (true) {
    const size_t comma = list.find(',', start);
    const std::string_view item =
        trim(list.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start));
    const auto kind = stat_by_name(item);
    if (!kind) {
      if (item.empty()) {
        fail(ErrorKind::kInvalidArgument, "statistics list '{}': empty name (valid names: {})", list,
             valid_stat_names());
      }
      fail(ErrorKind::kInvalidArgument, "statistics list '{}': unknown statistic '{}' (valid names: {})", list,
           item, valid_stat_names());
    }
    set = set.with(*kind);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return set;
}

StatSet StatSet::with(StatKind kind) const {
  StatSet out = *this;
  out.bits_ = static_cast<uint8_t>(bits_ | (1u << static_cast<int>(kind)));
  return out;
}

StatSet StatSet::without(StatKind kind) const {
  StatSet out = *this;
  out.bits_ = static_cast<uint8_t>(bits_ & ~(1u << static_cast<int>(kind)));
  return out;
}

std::vector<StatKind> StatSet::kinds() const {
  std::vector<StatKind> out;
  for (int i = 0; i < kNumStatKinds; ++i) {
    if (contains(static_cast<StatKind>(i))) out.push_back(static_cast<StatKind>(i));
  }
  return out;
}

std::vector<std::string> StatSet::names() const {
  std::vector<std::string> out;
  for (const StatKind kind : kinds()) out.emplace_back(stat_name(kind));
  return out;
}

std::string StatSet::to_string() const {
  std::string out;
  for (const StatKind kind : kinds()) {
    if (!out.empty()) out += ',';
    out += stat_name(kind);
  }
  return out;
}

// ---- finiteness ----

void check_finite_activations(const float* x, int64_t rows, int64_t cols, int64_t layer, InputSite site) {
  const int64_t n = rows * cols;
  for (int64_t i = 0; i < n; ++i) {
    if (std::isfinite(x[i])) continue;
    const std::string_view what = std::isnan(x[i]) ? "nan" : (x[i] > 0 ? "inf" : "-inf");
    const std::string where =
        layer < 0 ? fmt::format("the output head input ({})", site_name(site))
                  : fmt::format("layer {} {} input", layer, site_name(site));
    fail(ErrorKind::kInvalidArgument,
         "non-finite activation ({}) at {}, token {}, channel {}: the model or calibration data produces "
         "NaN/Inf",
         what, where, i / cols, i % cols);
  }
}

// ---- SiteStats ----

SiteStats::SiteStats(int64_t cols, StatSet kinds) : cols_(cols), kinds_(kinds) {
  assert(cols >= 1);
  const auto n = static_cast<size_t>(cols);
  if (kinds.contains(StatKind::kAbsMax)) absmax_.assign(n, 0.0f);
  if (kinds.contains(StatKind::kMeanAbs)) sum_abs_.assign(n, 0.0);
  if (kinds.contains(StatKind::kMeanSq)) sum_sq_.assign(n, 0.0);
  if (kinds.contains(StatKind::kHessian)) hessian_.assign(n * n, 0.0);
}

void SiteStats::observe(const float* x, int64_t rows, [[maybe_unused]] int64_t cols) {
  assert(cols == cols_ && rows >= 0);
  if (rows == 0) return;
  const auto n = static_cast<size_t>(cols_);
  const bool want_max = kinds_.contains(StatKind::kAbsMax);
  const bool want_abs = kinds_.contains(StatKind::kMeanAbs);
  const bool want_sq = kinds_.contains(StatKind::kMeanSq);
  // Row by row, in row order: each channel's sums see the rows in the same order for any caller.
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * cols_;
    if (want_max) {
      for (size_t c = 0; c < n; ++c) absmax_[c] = std::max(absmax_[c], std::fabs(row[c]));
    }
    if (want_abs) {
      for (size_t c = 0; c < n; ++c) sum_abs_[c] += static_cast<double>(std::fabs(row[c]));
    }
    if (want_sq) {
      // The product of two floats is exact in double.
      for (size_t c = 0; c < n; ++c) sum_sq_[c] += static_cast<double>(row[c]) * static_cast<double>(row[c]);
    }
  }
  if (kinds_.contains(StatKind::kHistogram)) {
    histogram_.add(std::span<const float>(x, static_cast<size_t>(rows * cols_)));
  }
  if (kinds_.contains(StatKind::kHessian)) add_hessian(x, rows, nullptr);
  rows_ += rows;
}

void SiteStats::add_hessian(const float* x, int64_t rows, ThreadPool* pool) {
  assert(kinds_.contains(StatKind::kHessian) && rows >= 0);
  if (rows == 0) return;
  init_blas_threading();  // one BLAS thread: its blocking, and so the result, never varies
  const int64_t n = cols_;
  const int64_t tiles = (n + kHessianTile - 1) / kHessianTile;
  std::vector<std::pair<int64_t, int64_t>> pairs;  // upper tile pairs (I <= J), row-major
  for (int64_t i = 0; i < tiles; ++i) {
    for (int64_t j = i; j < tiles; ++j) pairs.emplace_back(i, j);
  }
  const auto for_pairs = [&](const std::function<void(int64_t, int64_t)>& fn) {
    const auto run = [&](size_t p0, size_t p1) {
      for (size_t p = p0; p < p1; ++p) fn(pairs[p].first * kHessianTile, pairs[p].second * kHessianTile);
    };
    if (pool == nullptr) {
      run(0, pairs.size());
    } else {
      pool->parallel_for(0, pairs.size(), Grain{.min_items = 1}, run);
    }
  };
  const auto width = [n](int64_t t0) { return std::min(kHessianTile, n - t0); };
  double* h = hessian_.data();
  std::vector<double> block(static_cast<size_t>(std::min(rows, kHessianRowBlock) * n));
  for (int64_t r0 = 0; r0 < rows; r0 += kHessianRowBlock) {
    const int64_t k = std::min(kHessianRowBlock, rows - r0);
    const float* src = x + r0 * n;
    for (size_t i = 0; i < static_cast<size_t>(k * n); ++i) block[i] = static_cast<double>(src[i]);
    // H[I, J] += A[:, I]ᵀ A[:, J] for the block A = [k, n]; only the upper tiles are summed.
    for_pairs([&](int64_t i0, int64_t j0) {
      cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<blasint>(width(i0)),
                  static_cast<blasint>(width(j0)), static_cast<blasint>(k), 1.0, block.data() + i0,
                  static_cast<blasint>(n), block.data() + j0, static_cast<blasint>(n), 1.0, h + i0 * n + j0,
                  static_cast<blasint>(n));
    });
  }
  // The lower triangle mirrors the upper one (a diagonal tile's own lower half included), so the
  // stored matrix is exactly symmetric; each tile pair writes only its mirror.
  for_pairs([&](int64_t i0, int64_t j0) {
    for (int64_t i = i0; i < i0 + width(i0); ++i) {
      for (int64_t j = std::max(j0, i + 1); j < j0 + width(j0); ++j) h[j * n + i] = h[i * n + j];
    }
  });
}

std::vector<double> SiteStats::take_hessian() {
  assert(kinds_.contains(StatKind::kHessian));
  kinds_ = kinds_.without(StatKind::kHessian);
  return std::move(hessian_);
}

void SiteStats::merge(const SiteStats& other) {
  assert(other.cols_ == cols_ &&
         (other.kinds_ == kinds_ || other.kinds_ == kinds_.without(StatKind::kHessian)));
  for (size_t c = 0; c < absmax_.size(); ++c) absmax_[c] = std::max(absmax_[c], other.absmax_[c]);
  for (size_t c = 0; c < sum_abs_.size(); ++c) sum_abs_[c] += other.sum_abs_[c];
  for (size_t c = 0; c < sum_sq_.size(); ++c) sum_sq_[c] += other.sum_sq_[c];
  for (size_t c = 0; c < other.hessian_.size(); ++c) hessian_[c] += other.hessian_[c];
  if (kinds_.contains(StatKind::kHistogram)) histogram_.merge(other.histogram_);
  rows_ += other.rows_;
}

std::span<const float> SiteStats::absmax() const {
  assert(kinds_.contains(StatKind::kAbsMax));
  return absmax_;
}

std::span<const double> SiteStats::sum_abs() const {
  assert(kinds_.contains(StatKind::kMeanAbs));
  return sum_abs_;
}

std::span<const double> SiteStats::sum_sq() const {
  assert(kinds_.contains(StatKind::kMeanSq));
  return sum_sq_;
}

std::vector<float> SiteStats::mean_abs() const {
  assert(kinds_.contains(StatKind::kMeanAbs));
  std::vector<float> out(sum_abs_.size(), 0.0f);
  if (rows_ == 0) return out;
  for (size_t c = 0; c < out.size(); ++c) out[c] = static_cast<float>(sum_abs_[c] / static_cast<double>(rows_));
  return out;
}

std::vector<float> SiteStats::mean_sq() const {
  assert(kinds_.contains(StatKind::kMeanSq));
  std::vector<float> out(sum_sq_.size(), 0.0f);
  if (rows_ == 0) return out;
  for (size_t c = 0; c < out.size(); ++c) out[c] = static_cast<float>(sum_sq_[c] / static_cast<double>(rows_));
  return out;
}

const AbsHistogram& SiteStats::histogram() const {
  assert(kinds_.contains(StatKind::kHistogram));
  return histogram_;
}

std::span<const double> SiteStats::hessian() const {
  assert(kinds_.contains(StatKind::kHessian));
  return hessian_;
}

SiteStats SiteStats::from_parts(int64_t cols, StatSet kinds, Parts parts) {
  SiteStats s(cols, StatSet{});  // no buffers yet: the parts are moved in
  s.kinds_ = kinds;
  s.rows_ = parts.rows;
  [[maybe_unused]] const auto n = static_cast<size_t>(cols);
  if (kinds.contains(StatKind::kAbsMax)) {
    assert(parts.absmax.size() == n);
    s.absmax_ = std::move(parts.absmax);
  }
  if (kinds.contains(StatKind::kMeanAbs)) {
    assert(parts.sum_abs.size() == n);
    s.sum_abs_ = std::move(parts.sum_abs);
  }
  if (kinds.contains(StatKind::kMeanSq)) {
    assert(parts.sum_sq.size() == n);
    s.sum_sq_ = std::move(parts.sum_sq);
  }
  if (kinds.contains(StatKind::kHessian)) {
    assert(parts.hessian.size() == n * n);
    s.hessian_ = std::move(parts.hessian);
  }
  if (kinds.contains(StatKind::kHistogram)) s.histogram_ = std::move(parts.histogram);
  return s;
}

// ---- CalibrationStats ----

void CalibrationStats::observe(int64_t layer, InputSite site, const float* x, int64_t rows, int64_t cols) {
  assert((layer == -1) == (site == InputSite::kHeadIn) && layer >= -1);
  auto it = sites_.find(Key{layer, site});
  if (it == sites_.end()) it = sites_.emplace(Key{layer, site}, SiteStats(cols, kinds_)).first;
  it->second.observe(x, rows, cols);
}

namespace {
// Adds every site of `from` into `into`: merged where present, created with `kinds` where not.
template <typename Map>
void merge_sites(Map& into, const Map& from, StatSet kinds) {
  for (const auto& [key, stats] : from) {
    auto it = into.find(key);
    if (it != into.end()) {
      it->second.merge(stats);
    } else if (stats.kinds() == kinds) {
      into.emplace(key, stats);
    } else {
      into.emplace(key, SiteStats(stats.cols(), kinds)).first->second.merge(stats);
    }
  }
}
}  // namespace

void CalibrationStats::merge(const CalibrationStats& other) {
  assert(other.kinds_ == kinds_ || other.kinds_ == kinds_.without(StatKind::kHessian));
  merge_sites(sites_, other.sites_, kinds_);
  merge_sites(experts_, other.experts_, kinds_);
  for (const auto& [layer, counts] : other.routed_tokens) add_routed(layer, counts);
  samples += other.samples;
  if (seq_len == 0) seq_len = other.seq_len;
  if (model_name.empty()) model_name = other.model_name;
  for (const auto& h : other.calib_sha256) {
    if (std::find(calib_sha256.begin(), calib_sha256.end(), h) == calib_sha256.end()) calib_sha256.push_back(h);
  }
}

const SiteStats* CalibrationStats::find(int64_t layer, InputSite site) const {
  const auto it = sites_.find(Key{layer, site});
  return it == sites_.end() ? nullptr : &it->second;
}

SiteStats* CalibrationStats::find(int64_t layer, InputSite site) {
  const auto it = sites_.find(Key{layer, site});
  return it == sites_.end() ? nullptr : &it->second;
}

void CalibrationStats::add_hessian(int64_t layer, InputSite site, const float* x, int64_t rows, ThreadPool* pool) {
  const auto it = sites_.find(Key{layer, site});
  assert(it != sites_.end());
  it->second.add_hessian(x, rows, pool);
}

std::vector<std::pair<int64_t, InputSite>> CalibrationStats::sites() const {
  std::vector<std::pair<int64_t, InputSite>> out;
  out.reserve(sites_.size());
  for (const auto& [key, stats] : sites_) out.emplace_back(key.layer, key.site);
  return out;
}

namespace {
[[maybe_unused]] bool valid_expert_site(const CalibrationStats::ExpertSite& w) {
  return w.layer >= 0 && ((w.site == InputSite::kMoeIn && w.expert == -1) ||
                          ((w.site == InputSite::kExpertIn || w.site == InputSite::kExpertDown) && w.expert >= 0));
}
}  // namespace

void CalibrationStats::observe_expert(const ExpertSite& where, const float* x, int64_t rows, int64_t cols) {
  assert(valid_expert_site(where));
  auto it = experts_.find(where);
  if (it == experts_.end()) it = experts_.emplace(where, SiteStats(cols, kinds_)).first;
  it->second.observe(x, rows, cols);
}

const SiteStats* CalibrationStats::find_expert(const ExpertSite& where) const {
  const auto it = experts_.find(where);
  return it == experts_.end() ? nullptr : &it->second;
}

void CalibrationStats::add_expert_hessian(const ExpertSite& where, const float* x, int64_t rows, ThreadPool* pool) {
  const auto it = experts_.find(where);
  assert(it != experts_.end());
  it->second.add_hessian(x, rows, pool);
}

std::vector<CalibrationStats::ExpertSite> CalibrationStats::expert_sites() const {
  std::vector<ExpertSite> out;
  out.reserve(experts_.size());
  for (const auto& [key, stats] : experts_) out.push_back(key);
  return out;
}

void CalibrationStats::add_expert_site(const ExpertSite& where, SiteStats stats) {
  assert(valid_expert_site(where));
  assert(stats.kinds() == kinds_);
  const bool inserted = experts_.emplace(where, std::move(stats)).second;
  assert(inserted);
  (void)inserted;
}

void CalibrationStats::add_routed(int64_t layer, std::span<const int64_t> per_expert) {
  std::vector<int64_t>& have = routed_tokens[layer];
  if (have.size() < per_expert.size()) have.resize(per_expert.size(), 0);
  for (size_t e = 0; e < per_expert.size(); ++e) have[e] += per_expert[e];
}

void CalibrationStats::add_site(int64_t layer, InputSite site, SiteStats stats) {
  assert((layer == -1) == (site == InputSite::kHeadIn) && layer >= -1);
  assert(stats.kinds() == kinds_);
  const bool inserted = sites_.emplace(Key{layer, site}, std::move(stats)).second;
  assert(inserted);
  (void)inserted;
}

}  // namespace calq::calib
