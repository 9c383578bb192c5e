/* The one reader of a caller's option struct (internal.h: effml__options_read). */
#include <string.h>

#include "internal.h"

effml_status effml__options_read(effml_context *ctx, const char *fn, const char *init_name,
                                 const void *user, void *out, size_t size, size_t min_size) {
  if (user == NULL) return EFFML_OK;
  uint32_t ss;
  memcpy(&ss, user, sizeof ss);
  if (ss < min_size || ss > EFFML__OPTIONS_MAX_SIZE)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "%s%sopt->struct_size=%u is not valid (%s %zu bytes; fill the struct with "
                      "%s first)",
                      fn ? fn : "", fn ? ": " : "", (unsigned)ss, ss < min_size ? "at least" : "at most",
                      ss < min_size ? min_size : (size_t)EFFML__OPTIONS_MAX_SIZE, init_name);
  memcpy(out, user, ss < size ? ss : size);
  const uint32_t mine = (uint32_t)size;
  memcpy(out, &mine, sizeof mine);
  return EFFML_OK;
}
