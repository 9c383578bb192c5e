/**
 * @file effml/version.h
 * @brief Compile-time and run-time version of libeffml.
 *
 * The compile-time macros are the single source of truth: CMake reads them.
 * Compare `EFFML_VERSION_NUMBER` with `effml_version_number()` to detect a
 * header/library mismatch.  The ABI major is `EFFML_VERSION_MAJOR` (the
 * SONAME is `libeffml.so.<major>`); see docs/ABI.md.
 */
#ifndef EFFML_VERSION_H
#define EFFML_VERSION_H

#include "common.h"

#define EFFML_VERSION_MAJOR 0
#define EFFML_VERSION_MINOR 1
#define EFFML_VERSION_PATCH 0
/** major*10000 + minor*100 + patch. */
#define EFFML_VERSION_NUMBER \
  (EFFML_VERSION_MAJOR * 10000 + EFFML_VERSION_MINOR * 100 + EFFML_VERSION_PATCH)
#define EFFML_VERSION_STRING "0.1.0"

EFFML_BEGIN_DECLS

/** Version number of the library actually linked (same encoding as EFFML_VERSION_NUMBER). */
EFFML_API int32_t effml_version_number(void);
/** Version string of the linked library ("0.1.0"); static storage, never freed. */
EFFML_API const char *effml_version_string(void);

EFFML_END_DECLS

#endif /* EFFML_VERSION_H */
