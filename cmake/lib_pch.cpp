// The owner of the library layers' precompiled header (CMakeLists.txt, calq_library_pch): a static
// library like the layers, so that its compile flags (-fPIC, warnings, sanitizers) are theirs and GCC
// accepts the header for them. Empty on purpose.
