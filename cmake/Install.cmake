# `cmake --install` puts libcalq.so, the public headers (include/calq/) and a CMake package
# (lib/cmake/calq) under the prefix, so that find_package(calq) + target calq::calq works
# (examples/ is built that way in scripts/test.sh).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)
install(TARGETS calq_shared EXPORT calqTargets LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/calq DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS calq RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(EXPORT calqTargets NAMESPACE calq:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/calq)
file(WRITE ${CMAKE_BINARY_DIR}/calqConfig.cmake.in
  "@PACKAGE_INIT@\ninclude(\"\${CMAKE_CURRENT_LIST_DIR}/calqTargets.cmake\")\ncheck_required_components(calq)\n")
configure_package_config_file(${CMAKE_BINARY_DIR}/calqConfig.cmake.in ${CMAKE_BINARY_DIR}/calqConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/calq)
write_basic_package_version_file(${CMAKE_BINARY_DIR}/calqConfigVersion.cmake COMPATIBILITY SameMajorVersion)
install(FILES ${CMAKE_BINARY_DIR}/calqConfig.cmake ${CMAKE_BINARY_DIR}/calqConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/calq)
