# nwc_add_test(<name> SOURCES <files...> [LIBRARIES <libs...>])
#
# A doctest executable whose test cases are registered with CTest one by one. Tests find the shared
# data through NWC_DATA (environment) or the compiled-in default ../shared/data, and the built
# plugins through NWC_TEST_PLUGIN_DIR.
set(NWC_DEFAULT_DATA_DIR "${CMAKE_SOURCE_DIR}/../shared/data" CACHE PATH "Shared models and text")
function(nwc_add_test name)
  if(NOT NWC_BUILD_TESTS)
    return()
  endif()
  cmake_parse_arguments(T "" "" "SOURCES;LIBRARIES" ${ARGN})
  add_executable(${name} ${T_SOURCES} ${CMAKE_SOURCE_DIR}/tests/support/doctest_main.cpp)
  target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/tests/support)
  target_link_libraries(${name} PRIVATE doctest::doctest nwc::sdk ${T_LIBRARIES})
  target_compile_definitions(${name} PRIVATE
    NWC_TEST_DATA_DIR="${NWC_DEFAULT_DATA_DIR}"
    NWC_TEST_SOURCE_DIR="${CMAKE_SOURCE_DIR}"
    NWC_TEST_BINARY_DIR="${CMAKE_BINARY_DIR}"
    NWC_TEST_PLUGIN_DIR="${NWC_PLUGIN_OUTPUT_DIR}")
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  nwc_set_warnings(${name})
  doctest_discover_tests(${name} WORKING_DIRECTORY ${CMAKE_BINARY_DIR}/tests
                         PROPERTIES TIMEOUT 600)
endfunction()
