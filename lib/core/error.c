/* Status strings and version queries. */
#include "internal.h"

const char *effml_status_str(effml_status status) {
  switch (status) {
    case EFFML_OK: return "success";
    case EFFML_E_INVALID_ARG: return "invalid argument";
    case EFFML_E_SHAPE: return "shape error";
    case EFFML_E_DTYPE: return "dtype error";
    case EFFML_E_NOMEM: return "out of memory";
    case EFFML_E_IO: return "I/O error";
    case EFFML_E_FORMAT: return "malformed data";
    case EFFML_E_NUMERIC: return "numerical error";
    case EFFML_E_UNSUPPORTED: return "unsupported";
    case EFFML_E_NOT_FOUND: return "not found";
    case EFFML_E_OVERFLOW: return "size overflow";
    case EFFML_E_STATE: return "invalid state";
    case EFFML_E_RANGE: return "out of range";
    case EFFML_E_CANCELLED: return "cancelled";
    default: return "unknown status";
  }
}

int32_t effml_version_number(void) { return EFFML_VERSION_NUMBER; }
const char *effml_version_string(void) { return EFFML_VERSION_STRING; }
