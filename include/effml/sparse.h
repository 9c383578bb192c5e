/**
 * @file effml/sparse.h
 * @brief Sparse iso-FLOP layers (Sparse-IFT), masks, dynamic sparse training (issue 5)
 */
#ifndef EFFML_SPARSE_H
#define EFFML_SPARSE_H

#include "common.h"
#include "context.h"
#include "error.h"
#include "tensor.h"
#include "layer.h"

EFFML_BEGIN_DECLS

EFFML_END_DECLS

#endif /* EFFML_SPARSE_H */
