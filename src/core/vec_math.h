// Vectorised elementwise math for the runtime's hot loops (softmax, log-softmax, SiLU).
//
// Each function has a scalar `_reference` twin that performs the very same floating-point
// operations in the same order (FMA for FMA), so fast and reference results are bit-identical;
// tests assert that. exp is a Cephes-style range reduction + degree-6 polynomial: relative error
// below 2 ulp over the float range, 0 for inputs below -87.3 (no denormals).
#pragma once

#include <cstdint>

namespace calq {

// x[i] = exp(x[i] - sub) for i < n; returns the sum of the results, accumulated in double in 8
// interleaved lanes (lane = i mod 8) that are added as ((l0+l4)+(l2+l6))+((l1+l5)+(l3+l7)).
double exp_sub_sum(float* x, int64_t n, float sub);
double exp_sub_sum_reference(float* x, int64_t n, float sub);

// g[i] = silu(g[i]) * u[i] = g[i] / (1 + exp(-g[i])) * u[i].
void silu_mul(float* g, const float* u, int64_t n);
void silu_mul_reference(float* g, const float* u, int64_t n);

// max over x[0..n) (n > 0).
float max_value(const float* x, int64_t n);

// Scalar exp with the same polynomial as the vector paths.
float exp_poly(float x);

}  // namespace calq
