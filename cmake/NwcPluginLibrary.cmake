# nwc_plugin_library(<short-name> SOURCES <files...> [LIBRARIES <libs...>]
#                    [OUTPUT_DIRECTORY <dir>])
#
# The one implementation of an nwc plugin target, shared by the in-tree build (cmake/NwcPlugin.cmake)
# and by plugin authors building against an installed SDK (find_package(nwc) installs a copy of this
# file next to nwcConfig.cmake). It builds a MODULE library nwc-<short-name>.so that
#   - links nwc::sdk (the C ABI headers and the header-only C++ helpers, C++20),
#   - exports only nwc_module_entry: hidden visibility plus the version script,
#   - refuses undefined symbols at link time (-Wl,-z,defs),
#   - installs to ${CMAKE_INSTALL_LIBDIR}/nwc/plugins of the installing project's prefix.
# The version script is NWC_PLUGIN_VERSION_SCRIPT when that variable is set, otherwise the
# nwc-plugin.map that sits next to this file (in-tree: cmake/, installed: lib/cmake/nwc/).
include_guard(GLOBAL)
include(GNUInstallDirs)

set_property(GLOBAL PROPERTY NWC_PLUGIN_DEFAULT_VERSION_SCRIPT
             "${CMAKE_CURRENT_LIST_DIR}/nwc-plugin.map")

function(nwc_plugin_library name)
  cmake_parse_arguments(P "" "OUTPUT_DIRECTORY" "SOURCES;LIBRARIES" ${ARGN})
  if(P_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "nwc_add_plugin(${name}): unexpected arguments: ${P_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT P_SOURCES)
    message(FATAL_ERROR "nwc_add_plugin(${name}): SOURCES is required")
  endif()
  if(NOT TARGET nwc::sdk)
    message(FATAL_ERROR "nwc_add_plugin(${name}): target nwc::sdk is not defined "
                        "(call find_package(nwc) first)")
  endif()
  if(NWC_PLUGIN_VERSION_SCRIPT)
    set(map "${NWC_PLUGIN_VERSION_SCRIPT}")
  else()
    get_property(map GLOBAL PROPERTY NWC_PLUGIN_DEFAULT_VERSION_SCRIPT)
  endif()
  if(NOT EXISTS "${map}")
    message(FATAL_ERROR "nwc_add_plugin(${name}): version script ${map} does not exist")
  endif()

  set(target nwc-${name})
  add_library(${target} MODULE ${P_SOURCES})
  set_target_properties(${target} PROPERTIES PREFIX "" OUTPUT_NAME nwc-${name} SUFFIX ".so"
    CXX_VISIBILITY_PRESET hidden C_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON
    LINK_DEPENDS "${map}")
  if(P_OUTPUT_DIRECTORY)
    set_target_properties(${target} PROPERTIES LIBRARY_OUTPUT_DIRECTORY "${P_OUTPUT_DIRECTORY}")
  endif()
  target_link_libraries(${target} PRIVATE nwc::sdk ${P_LIBRARIES})
  target_link_options(${target} PRIVATE "LINKER:--version-script=${map}" "LINKER:-z,defs")
  install(TARGETS ${target} LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}/nwc/plugins)
endfunction()
