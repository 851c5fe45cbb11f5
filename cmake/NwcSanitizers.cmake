# NWC_SANITIZE="address;undefined" or "thread" instruments every target of the build.
# NWC_SANITIZER_FLAGS holds the same flags as one string, for builds outside this project that
# must match (tests/consumer builds the out-of-tree plugin template with them).
set(NWC_SANITIZER_FLAGS "")
if(NWC_SANITIZE)
  string(REPLACE ";" "," _nwc_san "${NWC_SANITIZE}")
  add_compile_options(-fsanitize=${_nwc_san} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_link_options(-fsanitize=${_nwc_san})
  set(NWC_SANITIZER_FLAGS "-fsanitize=${_nwc_san} -fno-omit-frame-pointer -fno-sanitize-recover=all")
endif()
