# Every dependency comes from a Debian package; see README.md "Dependencies" for why each is here.
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)        # nlohmann-json3-dev
find_package(CLI11 REQUIRED)                      # libcli11-dev
find_package(fmt REQUIRED)                        # libfmt-dev
find_package(OpenSSL REQUIRED COMPONENTS Crypto)  # libssl-dev (SHA-256 of token ids)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)   # libpcre2-dev
pkg_check_modules(UTF8PROC REQUIRED IMPORTED_TARGET libutf8proc) # libutf8proc-dev
pkg_check_modules(OPENBLAS REQUIRED IMPORTED_TARGET openblas)  # libopenblas-dev
pkg_check_modules(LAPACKE REQUIRED IMPORTED_TARGET lapacke)    # liblapacke-dev
if(CALQ_BUILD_TESTS)
  find_package(GTest REQUIRED)                    # libgtest-dev
endif()
if(CALQ_BUILD_BENCH)
  find_package(benchmark REQUIRED)                # libbenchmark-dev
endif()
