/* Header test: the umbrella header must compile alone, first thing in a
 * translation unit, under -std=c11 -Wall -Wextra -pedantic -Werror (and, via
 * headertest.cpp, as C++).  Touch a few declarations so unused-declaration
 * warnings and C/C++ incompatibilities in macros show up. */
#include <effml.h>

int main(void) {
  effml_context_options opt;
  effml_context_options_init(&opt);
  effml_status st = EFFML_OK;
  int64_t shape[EFFML_TENSOR_MAX_DIMS] = {1};
  (void)shape;
  (void)st;
  return EFFML_VERSION_NUMBER >= 0 && opt.struct_size > 0 ? 0 : 1;
}
