/* A shared library that is not an nwc plugin: it lacks nwc_module_entry. */
__attribute__((visibility("default"))) int nwc_test_not_a_plugin(void) {
  return 42;
}
