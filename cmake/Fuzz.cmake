# CALQ_FUZZ=ON: build calq's code for libFuzzer (clang only; scripts/fuzz.sh drives it).
# Everything is compiled with -fsanitize=fuzzer-no-link (coverage for the fuzzer) plus ASan and
# UBSan with no recovery, so any memory error or undefined behaviour is a crash the fuzzer
# reports; _GLIBCXX_ASSERTIONS adds bounds checks to std containers. Only fuzz/ links
# -fsanitize=fuzzer (libFuzzer's main).
if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  message(FATAL_ERROR "CALQ_FUZZ=ON needs clang: configure with -DCMAKE_C_COMPILER=clang "
                      "-DCMAKE_CXX_COMPILER=clang++ (see scripts/fuzz.sh)")
endif()
if(CALQ_SANITIZE)
  message(FATAL_ERROR "CALQ_FUZZ=ON already builds with ASan + UBSan; leave CALQ_SANITIZE off")
endif()
add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
                    -fno-omit-frame-pointer -g -D_GLIBCXX_ASSERTIONS)
add_link_options(-fsanitize=address,undefined)

# The warning policy (-Werror with GCC's warning set) belongs to the GCC build; the fuzz build is
# for finding crashes, so clang's different warnings must not stop it.
function(calq_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wno-unknown-warning-option)
endfunction()
