// Calibration statistics of the inputs of linear layers: the numbers the range observers and the
// calibration-driven methods (importance-weighted encoders, GPTQ, AWQ, SmoothQuant) read.
//
// Statistics are kept per "input site": linear layers that read the same activation share one
// site (q/k/v read the attention-norm output, gate/up the mlp-norm output), so their statistics
// are gathered once. Which sites a block has and which linears read each is the model's block
// topology (model/block_topology.h).
//
// Statistic kinds (StatKind, selectable by name):
//  * absmax    — per channel max |x| (float, exact)
//  * mean_abs  — per channel Σ|x| (double)
//  * mean_sq   — per channel Σx² (double); Σx²/rows is llama.cpp's importance matrix
//  * histogram — an AbsHistogram of |x| over all values of the site (integer counts, exact)
//  * hessian   — Σ xᵀx over rows, [cols × cols] in double (GPTQ's H/2·n); costly, not a default
//
// Determinism contract: observe() is serial — sums over rows in row order, in double; merge() adds
// element-wise; maxima and histogram counts are exact in any order. So stats filled per
// calibration sample (one observe() per sample and site, any thread) and merged in sample order
// give the same bits for any thread count. The sums depend on how rows are split into observe()
// calls; the pipeline fixes that split (one call per sample), so results are still reproducible
// bit for bit.
//
// The Hessian is accumulated in place, H += xᵀx, in fixed tiles of kHessianTile × kHessianTile
// (one OpenBLAS dgemm per upper tile pair and block of kHessianRowBlock rows, BLAS single-threaded),
// so its bits depend only on the order of the calls and their rows, never on who computes a tile.
// A Hessian is columns² doubles (1.6 GB for an 8B model's 14336-wide MLP input), so the
// layer-sequential pipeline keeps one per site, not one per worker: its per-sample statistics are
// collected without the Hessian (StatSet::without(kHessian)), merged in sample order, and each
// sample's rows are then added with add_hessian(), tiles split over the pool.
//
// NaN/Inf: observe() asserts finite inputs. Callers check activations with
// check_finite_activations() first, which reports them as a calq::Error.
#pragma once

#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "calib/histogram.h"
#include "core/thread_pool.h"
#include "model/architecture.h"
#include "model/block_topology.h"

namespace calq::calib {

// Sites are the model's (model/block_topology.h): one definition. The calib layer's own code names
// them unqualified through these declarations; code outside it writes model::InputSite.
using model::InputSite;
using model::kNumInputSites;
using model::site_by_name;
using model::site_name;  // "attn_in", "attn_out", "mlp_in", "mlp_down", "head_in"

// The site a linear role reads in `block` (asserts model::is_linear(linear_role) and that the
// block has a site for it). The default is the standard block every registered architecture uses.
InputSite input_site(model::TensorRole linear_role, const model::BlockTopology& block = model::kLlamaBlock);
// The linear roles that read a site (kAttnIn: q, k, v), in forward order (asserts the block has
// the site).
std::span<const model::TensorRole> site_roles(InputSite site, const model::BlockTopology& block = model::kLlamaBlock);

enum class StatKind : uint8_t { kAbsMax, kMeanAbs, kMeanSq, kHistogram, kHessian };
inline constexpr int kNumStatKinds = 5;

// "absmax", "mean_abs", "mean_sq", "histogram", "hessian".
std::string_view stat_name(StatKind kind);
std::optional<StatKind> stat_by_name(std::string_view name);

// A set of statistic kinds. Default-constructed it is empty; defaults() is what calibration
// collects unless asked otherwise (everything but the costly Hessian).
class StatSet {
 public:
  constexpr StatSet() = default;
  static StatSet defaults();  // absmax, mean_abs, mean_sq, histogram
  static StatSet all();
  // Parses a comma list such as "absmax,mean_sq,hessian" (spaces around names allowed, duplicates
  // ignored). An unknown or empty name is a kInvalidArgument Error listing the valid names.
  static StatSet parse(std::string_view list);

  bool contains(StatKind kind) const { return (bits_ >> static_cast<int>(kind)) & 1u; }
  StatSet with(StatKind kind) const;
  StatSet without(StatKind kind) const;
  bool empty() const { return bits_ == 0; }
  // Kinds in StatKind order.
  std::vector<StatKind> kinds() const;
  std::vector<std::string> names() const;
  std::string to_string() const;  // comma list in StatKind order ("" for the empty set)
  uint8_t bits() const { return bits_; }

  friend bool operator==(const StatSet&, const StatSet&) = default;

 private:
  uint8_t bits_ = 0;
};

// Rows per dgemm call when accumulating the Hessian (bounds the double copy of the rows), and the
// tile width of the accumulation (contract above).
inline constexpr int64_t kHessianRowBlock = 1024;
inline constexpr int64_t kHessianTile = 256;

// Throws kInvalidArgument naming the layer, site, token (row) and channel (column) of the first
// non-finite value, e.g. "non-finite activation (nan) at layer 3 mlp_down input, token 17,
// channel 5: the model or calibration data produces NaN/Inf". Layer -1 is the output head.
void check_finite_activations(const float* x, int64_t rows, int64_t cols, int64_t layer, InputSite site);

// Statistics of one input site: the [rows, cols] activations fed to it over the calibration run.
class SiteStats {
 public:
  SiteStats(int64_t cols, StatSet kinds);  // cols >= 1

  // Adds `rows` rows of `cols` (== this->cols(), asserted) finite values (asserted), row-major.
  void observe(const float* x, int64_t rows, int64_t cols);
  // Adds `other` (same cols and kinds, asserted — or other's kinds are this one's without the
  // Hessian: the Hessian's rows are then the caller's to add with add_hessian).
  void merge(const SiteStats& other);
  // Adds Σ xᵀx of `rows` finite rows of cols() values to the Hessian only (rows() unchanged;
  // asserts the kind), its tiles split over `pool` (nullptr: inline). observe() does the same
  // inline.
  void add_hessian(const float* x, int64_t rows, ThreadPool* pool);
  // Moves the Hessian out (asserts the kind); the site then holds its kinds without kHessian. For a
  // consumer that is the statistics' last reader (a layer's quantizer), so that it is not copied.
  std::vector<double> take_hessian();

  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  StatSet kinds() const { return kinds_; }

  // Each accessor asserts that its kind was collected.
  std::span<const float> absmax() const;    // [cols] max |x|
  std::span<const double> sum_abs() const;  // [cols] Σ|x|            (kMeanAbs)
  std::span<const double> sum_sq() const;   // [cols] Σx²             (kMeanSq)
  std::vector<float> mean_abs() const;      // [cols] Σ|x| / rows     (0 when rows == 0)
  std::vector<float> mean_sq() const;       // [cols] Σx² / rows: llama.cpp's imatrix importance
  const AbsHistogram& histogram() const;    // of |x| over all values
  std::span<const double> hessian() const;  // [cols × cols] Σ xᵀx, row-major, full symmetric

  // For the stats file reader: replaces the accumulated values (sizes and kinds asserted).
  struct Parts {
    int64_t rows = 0;
    std::vector<float> absmax;
    std::vector<double> sum_abs, sum_sq, hessian;
    AbsHistogram histogram;
  };
  static SiteStats from_parts(int64_t cols, StatSet kinds, Parts parts);

  friend bool operator==(const SiteStats&, const SiteStats&) = default;

 private:

  int64_t cols_;
  StatSet kinds_;
  int64_t rows_ = 0;
  std::vector<float> absmax_;
  std::vector<double> sum_abs_;
  std::vector<double> sum_sq_;
  AbsHistogram histogram_;
  std::vector<double> hessian_;
};

// The statistics of all sites of a model, keyed by (layer, site); layer -1 is the output head's
// input (site kHeadIn, and only there).
class CalibrationStats {
 public:
  explicit CalibrationStats(StatSet kinds = StatSet::defaults()) : kinds_(kinds) {}

  StatSet kinds() const { return kinds_; }
  // Creates the site on first use with `cols`; later calls must pass the same cols (asserted).
  void observe(int64_t layer, InputSite site, const float* x, int64_t rows, int64_t cols);
  // Adds `other` (same kinds, asserted, or this one's without the Hessian — the deferred Hessians of
  // the contract above): sites are merged, missing ones created with this one's kinds. Provenance:
  // samples add up; calib_sha256 gains other's hashes not yet listed (order kept); model_name and
  // seq_len are taken from `other` only where this one's are empty/0; seed stays this one's.
  void merge(const CalibrationStats& other);

  const SiteStats* find(int64_t layer, InputSite site) const;
  SiteStats* find(int64_t layer, InputSite site);
  // SiteStats::add_hessian on a site that exists (merged before; asserted).
  void add_hessian(int64_t layer, InputSite site, const float* x, int64_t rows, ThreadPool* pool);
  // In (layer, site) order, the output head last.
  std::vector<std::pair<int64_t, InputSite>> sites() const;
  size_t site_count() const { return sites_.size(); }
  // Inserts a whole site (the reader; asserts it is new and has this object's kinds).
  void add_site(int64_t layer, InputSite site, SiteStats stats);

  // Mixture-of-experts statistics (model/moe.h), apart from the block's sites: kMoeIn with expert
  // -1 (a layer's MLP input over all tokens), kExpertIn / kExpertDown per expert (asserted).
  struct ExpertSite {
    int64_t layer;
    int64_t expert;  // -1 for kMoeIn
    InputSite site;
    friend auto operator<=>(const ExpertSite&, const ExpertSite&) = default;
  };
  void observe_expert(const ExpertSite& where, const float* x, int64_t rows, int64_t cols);
  const SiteStats* find_expert(const ExpertSite& where) const;
  void add_expert_hessian(const ExpertSite& where, const float* x, int64_t rows, ThreadPool* pool);
  std::vector<ExpertSite> expert_sites() const;  // in (layer, expert, site) order
  void add_expert_site(const ExpertSite& where, SiteStats stats);
  // Tokens the router sent to each expert (natural routing, whatever the statistics policy), by
  // layer: routed_tokens[layer][expert]. Merged by addition.
  std::map<int64_t, std::vector<int64_t>> routed_tokens;
  void add_routed(int64_t layer, std::span<const int64_t> per_expert);

  // Provenance, stored in the stats file.
  int64_t samples = 0;                    // calibration samples (sequences) observed
  int64_t seq_len = 0;                    // tokens per sample
  int64_t seed = 0;                       // sampling seed
  std::string model_name;                 // the model the statistics describe
  std::vector<std::string> calib_sha256;  // hex SHA-256 of each calibration file, or "generated:..." (eval/synthetic.h)

  friend bool operator==(const CalibrationStats&, const CalibrationStats&) = default;

 private:
  // Layer -1 (the head) sorts after every decoder layer.
  struct Key {
    int64_t layer;
    InputSite site;
    int64_t order() const { return layer < 0 ? std::numeric_limits<int64_t>::max() : layer; }
    friend bool operator<(const Key& a, const Key& b) {
      return a.order() != b.order() ? a.order() < b.order() : a.site < b.site;
    }
    friend bool operator==(const Key&, const Key&) = default;
  };

  StatSet kinds_;
  std::map<Key, SiteStats> sites_;
  std::map<ExpertSite, SiteStats> experts_;
};

// The statistics file: a GGUF container (keys and tensor names in docs/formats.md, "Calibration
// statistics files"). write_stats_file writes through io::write_gguf (temporary file + rename).
void write_stats_file(const CalibrationStats& stats, const std::filesystem::path& path);
// Validates everything (keys, kinds, site list, tensor types and shapes, finite and non-negative
// values, histogram totals); a bad file is a calq::Error naming the file and the key or tensor.
CalibrationStats read_stats_file(const std::filesystem::path& path);
// Reads every file, checks each against the first (same kinds, sites and widths, model and
// seq_len; otherwise a kInvalidArgument Error naming both files) and merges them in argument
// order. An empty list is kInvalidArgument.
CalibrationStats merge_stats_files(std::span<const std::filesystem::path> paths);

}  // namespace calq::calib
