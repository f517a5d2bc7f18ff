// LayerStore — a quantizing run's finished layers kept in files instead of memory.
//
// Contract: store(l, w) writes every quantized weight of layer l (its linears and experts; float
// ones stay in memory) into dir/layer-NNNNN.safetensors — U8 tensors named by role ("attn_q",
// "expert.3.ffn_down"), metadata "calq.layer" and per tensor "<name>.format" and "<name>.shape"
// ("rows,cols") — atomically (temp file, then rename), then replaces them in `w` by views of that
// file, memory-mapped, with their pages released (core/mapped_file.h). The weights then read the same
// bytes as before; the model holds the files open. A run over a model larger than memory thus holds
// one layer's weights at a time, and the files are what a resumed run can read back.
// Errors (disk full, unwritable dir) are calq::Errors naming the file.
#pragma once

#include <cstdint>
#include <filesystem>

#include "model/model.h"

namespace calq::pipeline {

class LayerStore {
 public:
  explicit LayerStore(std::filesystem::path dir);  // created if missing
  const std::filesystem::path& dir() const { return dir_; }
  std::filesystem::path file(int64_t layer) const;  // dir/layer-NNNNN.safetensors
  void store(int64_t layer, model::LayerWeights& weights) const;

 private:
  std::filesystem::path dir_;
};

}  // namespace calq::pipeline
