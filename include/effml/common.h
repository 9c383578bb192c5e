/**
 * @file effml/common.h
 * @brief Export macro and basic types shared by every libeffml header.
 *
 * `EFFML_API` marks every exported function.  Vendored or static builds may
 * define it before including any libeffml header (for example to nothing).
 */
#ifndef EFFML_COMMON_H
#define EFFML_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifndef EFFML_API
#  if defined(_WIN32) && defined(EFFML_BUILDING_SHARED)
#    define EFFML_API __declspec(dllexport)
#  elif defined(__GNUC__) || defined(__clang__)
#    define EFFML_API __attribute__((visibility("default")))
#  else
#    define EFFML_API
#  endif
#endif

#ifdef __cplusplus
#  define EFFML_BEGIN_DECLS extern "C" {
#  define EFFML_END_DECLS }
#else
#  define EFFML_BEGIN_DECLS
#  define EFFML_END_DECLS
#endif

#endif /* EFFML_COMMON_H */
