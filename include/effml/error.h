/**
 * @file effml/error.h
 * @brief Status codes.
 *
 * Every fallible function returns an `effml_status`: 0 on success, a negative
 * code on error.  Codes are explicit numbers that are never reused or
 * renumbered (a retired code keeps its number forever).  The detailed message
 * -- naming the argument and the value that was wrong -- is stored in the
 * context: see effml_context_last_error().
 */
#ifndef EFFML_ERROR_H
#define EFFML_ERROR_H

#include "common.h"

EFFML_BEGIN_DECLS

typedef int32_t effml_status;

#define EFFML_OK 0
#define EFFML_E_INVALID_ARG (-1)  /**< NULL pointer, value out of its allowed range */
#define EFFML_E_SHAPE (-2)        /**< shapes disagree, zero/negative dim, too many dims */
#define EFFML_E_DTYPE (-3)        /**< unsupported or mismatched element type */
#define EFFML_E_NOMEM (-4)        /**< allocation failed */
#define EFFML_E_IO (-5)           /**< file could not be opened, read or written */
#define EFFML_E_FORMAT (-6)       /**< file or buffer contents are malformed */
#define EFFML_E_NUMERIC (-7)      /**< NaN/inf input, singular matrix, no convergence */
#define EFFML_E_UNSUPPORTED (-8)  /**< valid request that this build does not implement */
#define EFFML_E_NOT_FOUND (-9)    /**< named item (tensor, parameter, file) absent */
#define EFFML_E_OVERFLOW (-10)    /**< a size computation overflows size_t/int64_t */
#define EFFML_E_STATE (-11)       /**< call out of order (e.g. backward before forward) */
#define EFFML_E_RANGE (-12)       /**< index or label out of range */

/**
 * Short static description of a status code ("invalid argument", ...).
 * Unknown codes give "unknown status".  Never NULL, never freed.
 */
EFFML_API const char *effml_status_str(effml_status status);

EFFML_END_DECLS

#endif /* EFFML_ERROR_H */
