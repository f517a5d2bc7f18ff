// Importance matrices (llama.cpp's "imatrix"): per tensor, the mean of x² of each input column
// over the calibration tokens. Encoders weight their rounding error by it.
//
// Formats read (detected by content):
//  * llama.cpp's legacy binary file (llama-imatrix --output-format dat, `imatrix.dat`):
//    i32 n_entries, then per entry: i32 name_len, name bytes, i32 ncall, i32 nval, nval × f32
//    (sums of per-call means; divided by ncall here, as llama-quantize does), then optionally
//    i32 last_call, i32 dataset_len, dataset bytes.
//  * llama.cpp's GGUF imatrix: tensors "<name>.in_sum2" (F32, ne {n_per_row, n_mat}) and
//    "<name>.counts" (F32, ne {1, n_mat}); importance = in_sum2 / counts per matrix.
// Every failure (truncated file, negative or absurd counts, duplicate or empty names, non-finite
// or negative values) is a calq::Error (kFormat) naming the file and entry.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace calq::pipeline {

struct ImatrixEntry {
  int64_t ncall = 0;          // calibration chunks that reached this tensor
  std::vector<float> values;  // importance per input column (× number of experts, expert-major)
};

struct Imatrix {
  std::filesystem::path path;
  std::string dataset;                        // the calibration file named in the imatrix, if any
  int64_t chunks = 0;                         // last_call (legacy) / chunk count, 0 when absent
  std::map<std::string, ImatrixEntry> entries;  // by tensor name ("blk.0.attn_q.weight")

  const ImatrixEntry* find(const std::string& tensor) const;
};

Imatrix read_imatrix(const std::filesystem::path& path);
// Parses bytes of the legacy format; `origin` names them in errors.
Imatrix parse_legacy_imatrix(std::span<const std::byte> bytes, const std::filesystem::path& origin);

}  // namespace calq::pipeline
