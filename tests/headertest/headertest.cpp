// Header test, C++ flavour: the umbrella header must compile as C++11 under
// -Wall -Wextra -pedantic -Werror, with C linkage for every declaration.
#include <effml.h>

int main() {
  effml_context_options opt;
  effml_context_options_init(&opt);
  effml_status (*create)(const effml_context_options *, effml_context **) = &effml_context_create;
  (void)create;
  return EFFML_VERSION_NUMBER >= 0 && opt.struct_size > 0 ? 0 : 1;
}
