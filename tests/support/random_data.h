// Random test data shared by tests (deterministic for a seed).
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

namespace calq::testing {

// n draws of N(0, sigma²) from std::mt19937(seed), in order.
inline std::vector<float> gaussian(size_t n, uint32_t seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sigma);
  std::vector<float> x(n);
  for (auto& v : x) v = d(rng);
  return x;
}

}  // namespace calq::testing
