/* Compiled as strict C11 (-std=c11 -pedantic -Werror): the ABI headers are pure C. */
#include "layout.h"

#include <string.h>

/* Returns the status name through the header's inline function, so the C build links it. */
const char *nwc_test_c_status_name(nwc_status st) {
  return nwc_status_name(st);
}

size_t nwc_test_c_sizeof_descriptor(void) {
  return sizeof(nwc_plugin_descriptor);
}
