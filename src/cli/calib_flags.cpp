#include "cli/calib_flags.h"


namespace calq::cli {

void add_calib_flags(CLI::App* cmd, CalibFlags& f) {
  cmd->add_option("--calib", f.text,
                  "Calibration text: plain text (documents separated by blank lines) or JSONL with a \"text\" field; "
                  "or generate:N[,greedy=G][,top_k=K] for N sequences sampled from the model itself (data-free, "
                  "LLM-QAT style: BOS, a random token, G greedy tokens (default 3), then sampling, seeded by --seed)");
  cmd->add_option("--samples", f.samples,
                  "Calibration samples (sequences) to draw; 128-512 advised (generate:N draws N instead)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->add_option("--seq-len", f.seq_len, "Tokens per calibration sample")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{2}, int64_t{1} << 20));
  cmd->add_option("--seed", f.seed, "Seed of the calibration sample draw")->capture_default_str();
  cmd->add_option("--tokenizer", f.tokenizer,
                  "tokenizer.json to tokenize the calibration text with instead of the model's own");
}

}  // namespace calq::cli
