// llama_logits — llama.cpp's logits for given token ids, as exact as llama.cpp runs: every
// position's logits from one llama_decode per prompt, CPU only, one thread, the KV cache in F32,
// flash attention off, no weight repacking. Built outside calq's build against an existing
// llama.cpp build (scripts/build-llama-logits.sh); calq's fixtures of llama.cpp's logits
// (tests/fixtures/llama_cpp_logits, scripts/make-arch-fixtures.py) come from it.
//
//   llama_logits MODEL.gguf --out LOGITS.bin [--threads N] -p "1 17 42 ..." [-p "..."]...
//
// Writes the logits of every prompt, in order, position by position, n_vocab float32 values each
// (little-endian, as the machine stores them), and prints one JSON line to stdout:
//   {"n_vocab": V, "lengths": [n1, n2, ...], "system_info": "..."}
// Exit status 1 on any error (message on stderr). Only llama.h's public C API is used.
#include <llama.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

namespace {

[[noreturn]] void die(const std::string& message) {
  std::fprintf(stderr, "llama_logits: %s\n", message.c_str());
  std::exit(1);
}

std::vector<llama_token> parse_ids(const std::string& text) {
  std::vector<llama_token> ids;
  std::istringstream in(text);
  std::string word;
  while (in >> word) {
    char* end = nullptr;
    errno = 0;
    const long v = std::strtol(word.c_str(), &end, 10);
    if (errno != 0 || *end != '\0' || v < 0 || v > 0x7fffffff) die("bad token id '" + word + "' in a prompt");
    ids.push_back(static_cast<llama_token>(v));
  }
  if (ids.empty()) die("empty prompt");
  return ids;
}

// Errors and warnings only: the tool's stdout carries the JSON line.
void quiet_log(ggml_log_level level, const char* text, void*) {
  if (level == GGML_LOG_LEVEL_ERROR || level == GGML_LOG_LEVEL_WARN) std::fputs(text, stderr);
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path, out_path;
  int threads = 1;
  std::vector<std::vector<llama_token>> prompts;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) die("option " + a + " needs a value");
      return argv[++i];
    };
    if (a == "-p" || a == "--prompt") {
      prompts.push_back(parse_ids(value()));
    } else if (a == "--out" || a == "-o") {
      out_path = value();
    } else if (a == "--threads" || a == "-t") {
      threads = std::atoi(value().c_str());
      if (threads < 1) die("--threads must be at least 1");
    } else if (!a.empty() && a[0] == '-') {
      die("unknown option " + a);
    } else if (model_path.empty()) {
      model_path = a;
    } else {
      die("more than one model given");
    }
  }
  if (model_path.empty() || out_path.empty() || prompts.empty()) {
    die("usage: llama_logits MODEL.gguf --out LOGITS.bin [--threads N] -p \"ids\" [-p \"ids\"]...");
  }
  size_t longest = 0;
  for (const auto& p : prompts) longest = p.size() > longest ? p.size() : longest;

  llama_log_set(quiet_log, nullptr);
  llama_backend_init();
  llama_model_params mp = llama_model_default_params();
  mp.n_gpu_layers = 0;
  mp.use_extra_bufts = false;  // no repacked weight layouts: plain ggml kernels
  llama_model* model = llama_model_load_from_file(model_path.c_str(), mp);
  if (model == nullptr) die("llama.cpp could not load " + model_path);
  const llama_vocab* vocab = llama_model_get_vocab(model);
  const int32_t n_vocab = llama_vocab_n_tokens(vocab);

  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = static_cast<uint32_t>(longest < 16 ? 16 : longest);
  cp.n_batch = cp.n_ctx;
  cp.n_ubatch = cp.n_ctx;
  cp.n_seq_max = 1;
  cp.n_threads = threads;
  cp.n_threads_batch = threads;
  cp.type_k = GGML_TYPE_F32;
  cp.type_v = GGML_TYPE_F32;
  cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
  cp.offload_kqv = false;
  cp.op_offload = false;
  cp.no_perf = true;
  llama_context* ctx = llama_init_from_model(model, cp);
  if (ctx == nullptr) die("llama.cpp could not create a context for " + model_path);

  std::FILE* out = std::fopen(out_path.c_str(), "wb");
  if (out == nullptr) die("cannot write " + out_path + ": " + std::strerror(errno));
  std::string lengths;
  for (const auto& ids : prompts) {
    for (const llama_token id : ids) {
      if (id >= n_vocab) die("token id " + std::to_string(id) + " is outside the vocabulary of " + std::to_string(n_vocab));
    }
    llama_memory_clear(llama_get_memory(ctx), true);
    llama_batch batch = llama_batch_init(static_cast<int32_t>(ids.size()), 0, 1);
    for (size_t i = 0; i < ids.size(); ++i) {
      batch.token[i] = ids[i];
      batch.pos[i] = static_cast<llama_pos>(i);
      batch.n_seq_id[i] = 1;
      batch.seq_id[i][0] = 0;
      batch.logits[i] = 1;
    }
    batch.n_tokens = static_cast<int32_t>(ids.size());
    if (llama_decode(ctx, batch) != 0) die("llama_decode failed");
    for (size_t i = 0; i < ids.size(); ++i) {
      const float* logits = llama_get_logits_ith(ctx, static_cast<int32_t>(i));
      if (logits == nullptr) die("no logits for position " + std::to_string(i));
      if (std::fwrite(logits, sizeof(float), static_cast<size_t>(n_vocab), out) != static_cast<size_t>(n_vocab)) {
        die("cannot write " + out_path);
      }
    }
    llama_batch_free(batch);
    lengths += (lengths.empty() ? "" : ", ") + std::to_string(ids.size());
  }
  if (std::fclose(out) != 0) die("cannot write " + out_path);

  std::string info = llama_print_system_info();
  while (!info.empty() && (info.back() == ' ' || info.back() == '|' || info.back() == '\n')) info.pop_back();
  for (char& ch : info) {
    if (ch == '"' || ch == '\\') ch = ' ';
  }
  std::printf("{\"n_vocab\": %d, \"lengths\": [%s], \"system_info\": \"%s\"}\n", n_vocab, lengths.c_str(), info.c_str());
  llama_free(ctx);
  llama_model_free(model);
  llama_backend_free();
  return 0;
}
