# NWC_SANITIZE="address;undefined" or "thread" instruments every target of the build.
if(NWC_SANITIZE)
  string(REPLACE ";" "," _nwc_san "${NWC_SANITIZE}")
  add_compile_options(-fsanitize=${_nwc_san} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_link_options(-fsanitize=${_nwc_san})
endif()
