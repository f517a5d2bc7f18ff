// The online input transforms of a GGUF file (gguf_export.h: F32 tensors blk.L.calq_kron.S.a / .b).
// Internal to calq_model (the GGUF loader, gguf_model.h).
#pragma once

#include <string_view>

#include "core/thread_pool.h"
#include "io/gguf.h"
#include "model/model.h"

namespace calq::model {

// Whether a tensor name is in calq's transform namespace (contains "calq_kron"): the loader's
// check of known tensor names leaves such tensors to read_gguf_transforms.
bool is_kron_tensor_name(std::string_view name);

// Reads every transform of `file` into m.layers (m.config, m.arch and m.layers already loaded).
// Every tensor in the namespace must be a well-formed name blk.<L>.calq_kron.<site>.a|b with L below
// block_count and a layer site of the block, a square F32 matrix of finite values, with its
// partner, the two making up the site's width; else Error(kFormat) naming the file and tensor.
void read_gguf_transforms(const io::GgufFile& file, Model& m, ThreadPool& pool);

}  // namespace calq::model
