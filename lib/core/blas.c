/* Size checks of the BLAS/LAPACK wrappers (lib/core/blas.h); no BLAS is called here. */
#include "internal.h"

effml_status effml__blas_check_dims(effml_context *ctx, const char *routine, const char *caller,
                                    int64_t max, int32_t n, const int64_t *v, const char *names) {
  const char *name = names;
  for (int32_t i = 0; i < n; ++i) {
    size_t len = 0;
    while (name[len] != '\0' && name[len] != ',') ++len;
    if (v[i] < 0 || v[i] > max)
      return effml__err(
          ctx, v[i] < 0 ? EFFML_E_SHAPE : EFFML_E_UNSUPPORTED,
          "%s (from %s): %.*s = %lld %s (%d-bit, at most %lld)", routine, caller ? caller : "?",
          (int)len, name, (long long)v[i],
          v[i] < 0 ? "is negative for the BLAS integer" : "does not fit the BLAS integer",
          max == INT64_MAX ? 64 : 32, (long long)max);
    name += len;
    while (*name == ',' || *name == ' ') ++name;
  }
  return EFFML_OK;
}
