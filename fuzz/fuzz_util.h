// Shared bits of the fuzz targets.
#pragma once

#include <cstdio>
#include <cstdlib>

#include "core/error.h"

namespace calq::fuzz {

// CALQ_FUZZ_VERBOSE=1 prints every rejected input's error (to check that seeds load).
inline void report(const calq::Error& e) {
  static const bool verbose = [] {
    const char* v = std::getenv("CALQ_FUZZ_VERBOSE");
    return v != nullptr && v[0] == '1';
  }();
  if (verbose) std::fprintf(stderr, "rejected: %s\n", e.what());
}

// A property the code under test must keep: a violation is a crash the fuzzer reports.
#define CALQ_FUZZ_CHECK(cond)                                                          \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      std::fprintf(stderr, "%s:%d: property violated: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                    \
    }                                                                                  \
  } while (0)

}  // namespace calq::fuzz
