# Warnings are errors for calq's own code (not for third-party headers, which come in as SYSTEM).
function(calq_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Werror
    -Wshadow -Wnon-virtual-dtor -Wcast-align -Wunused -Woverloaded-virtual -Wimplicit-fallthrough
    # Option structs are filled with designated initializers that name only what differs from
    # the defaults; GCC 12 would flag every omitted member.
    -Wno-missing-field-initializers
    # GCC 12 at -O3 reports false positives from inlined libstdc++ code (std::string copies and
    # std::optional: GCC bugs 105329 and 80635); they would make a Release build depend on luck.
    -Wno-restrict -Wno-maybe-uninitialized)
endfunction()
