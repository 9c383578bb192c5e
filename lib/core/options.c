/* The one reader of a caller's option struct (internal.h: effml__options_read). */
#include <string.h>

#include "internal.h"

effml_status effml__options_check_tail(effml_context *ctx, const char *fn, const char *type_name,
                                       size_t type_len, const void *user, size_t user_size,
                                       size_t size) {
  const unsigned char *b = (const unsigned char *)user;
  for (size_t i = size; i < user_size; ++i)
    if (b[i] != 0)
      return effml__err(ctx, EFFML_E_UNSUPPORTED,
                        "%s%s%.*s has struct_size=%zu but libeffml %s knows only its first %zu "
                        "bytes, and the byte at offset %zu is nonzero: a field of a newer header "
                        "is set (leave it 0, or link a newer libeffml)",
                        fn ? fn : "", fn ? ": " : "", (int)type_len, type_name, user_size,
                        effml_version_string(), size, i);
  return EFFML_OK;
}

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
  if (ss > size) { /* a newer caller: its extra fields must be at their "off" value, 0 */
    size_t len = strlen(init_name);
    if (len > 5 && strcmp(init_name + len - 5, "_init") == 0) len -= 5; /* the struct's name */
    EFFML__TRY(effml__options_check_tail(ctx, fn, init_name, len, user, ss, size));
  }
  memcpy(out, user, ss < size ? ss : size);
  const uint32_t mine = (uint32_t)size;
  memcpy(out, &mine, sizeof mine);
  return EFFML_OK;
}
