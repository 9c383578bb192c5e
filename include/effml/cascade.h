/**
 * @file effml/cascade.h
 * @brief Window-based early-exit cascades and selective-classification metrics (issue 7)
 */
#ifndef EFFML_CASCADE_H
#define EFFML_CASCADE_H

#include "common.h"
#include "context.h"
#include "error.h"
#include "tensor.h"
#include "layer.h"

EFFML_BEGIN_DECLS

EFFML_END_DECLS

#endif /* EFFML_CASCADE_H */
