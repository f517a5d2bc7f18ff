// The owner of the test suite's precompiled header (CMakeLists.txt, calq_add_test): an executable
// like the tests, so that its compile flags (-fPIE, warnings, sanitizers) are theirs and GCC accepts
// the header for them. Never run.
int main() { return 0; }
