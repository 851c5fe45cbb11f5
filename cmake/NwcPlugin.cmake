# nwc_add_plugin(<short-name> SOURCES <files...> [LIBRARIES <libs...>])  — in-tree plugins.
#
# Builds a plugin as a MODULE library named nwc-<short-name>.so that exports only
# nwc_module_entry (hidden visibility + version script) and refuses undefined symbols; see
# cmake/NwcPluginLibrary.cmake, the implementation shared with the installed SDK package
# (find_package(nwc) gives plugin authors the same nwc_add_plugin). In-tree plugins additionally
# land in ${NWC_PLUGIN_OUTPUT_DIR} (the build tree mirrors the install layout) and get the
# project's warning policy.
include(${CMAKE_CURRENT_LIST_DIR}/NwcPluginLibrary.cmake)

function(nwc_add_plugin name)
  nwc_plugin_library(${name} ${ARGN} OUTPUT_DIRECTORY ${NWC_PLUGIN_OUTPUT_DIR})
  nwc_set_warnings(nwc-${name})
  set_property(GLOBAL APPEND PROPERTY NWC_PLUGIN_TARGETS nwc-${name}) # for tests/fuzz
endfunction()
