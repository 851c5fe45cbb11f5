# nwc_add_plugin(<short-name> SOURCES <files...> [LIBRARIES <libs...>])
#
# Builds a plugin as a MODULE library named nwc-<short-name>.so that exports only
# nwc_module_entry (hidden visibility + version script) and refuses undefined symbols.
set(_NWC_PLUGIN_CMAKE_DIR ${CMAKE_CURRENT_LIST_DIR})
function(nwc_add_plugin name)
  cmake_parse_arguments(P "" "" "SOURCES;LIBRARIES" ${ARGN})
  set(target nwc-${name})
  add_library(${target} MODULE ${P_SOURCES})
  set_target_properties(${target} PROPERTIES PREFIX "" OUTPUT_NAME nwc-${name}
    CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON
    LIBRARY_OUTPUT_DIRECTORY ${NWC_PLUGIN_OUTPUT_DIR})
  target_link_libraries(${target} PRIVATE nwc::sdk ${P_LIBRARIES})
  target_link_options(${target} PRIVATE
    -Wl,--version-script=${_NWC_PLUGIN_CMAKE_DIR}/nwc-plugin.map -Wl,-z,defs)
  nwc_set_warnings(${target})
  install(TARGETS ${target} LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}/nwc/plugins)
endfunction()
