// Quantizes a model to q4_k with GPTQ on a little calibration text, then measures the file
// against the full-precision model: the library's whole path in one program.
// Usage: quantize_and_evaluate MODEL TEXT OUT.gguf
#include <calq/calq.h>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s MODEL TEXT OUT.gguf\n", argv[0]);
    return 2;
  }
  try {
    const calq::QuantizeReport q = calq::quantize({
        .model = argv[1],
        .out = argv[3],
        .format = "q4_k",
        .method = "gptq",
        .calibration = {.text = argv[2], .samples = 8, .seq_len = 128},
        .force = true,
        .progress = [](const calq::Progress& p) {
          if (p.stage == "layer") std::fprintf(stderr, "  %.*s\n", static_cast<int>(p.message.size()), p.message.data());
          return true;
        },
    });
    const calq::EvalReport e = calq::evaluate(
        {.reference = argv[1], .models = {argv[3]}, .text = argv[2], .ctx = 128, .max_windows = 4});
    const calq::ModelScore& s = e.models.at(0);
    std::printf("calq %s: %s, %.3f bits per weight; KLD %.5f [%.5f, %.5f], top-1 %.1f %%, PPL %.3f vs %.3f\n",
                calq::version(), q.out.c_str(), q.bits_per_weight, s.kld_mean, s.kld_mean_ci.lo, s.kld_mean_ci.hi,
                100 * s.top1_agreement, s.ppl, s.ppl_ref);
  } catch (const calq::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
