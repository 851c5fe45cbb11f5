# nwc_set_warnings(target): the project's one warning policy.
function(nwc_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wconversion -Wshadow
                                           -Wno-sign-conversion)
  if(NWC_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()

# nwc_vectorize(<target>): the decode loops of the quantizers, chunkers, entropy coders and the
# neural codec's MLP are written to vectorize (no branch or call per element), but GCC at -O2 only
# vectorizes loops that need no scalar remainder ("very cheap" cost model); give these targets the
# cost model of -O3. Vectorizing never reorders a floating-point sum (no -ffast-math), so the
# decoded bits stay the same.
function(nwc_vectorize target)
  target_compile_options(${target} PRIVATE $<$<CXX_COMPILER_ID:GNU>:-fvect-cost-model=dynamic>)
endfunction()
