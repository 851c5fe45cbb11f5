# nwc_set_warnings(target): the project's one warning policy.
function(nwc_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wconversion -Wshadow
                                           -Wno-sign-conversion)
  if(NWC_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
