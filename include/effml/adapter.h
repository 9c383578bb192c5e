/**
 * @file effml/adapter.h
 * @brief Kronecker and low-rank adapters: PHM, Compacter (LPHM), LoRA, LoKr, adapter block (issue 4)
 */
#ifndef EFFML_ADAPTER_H
#define EFFML_ADAPTER_H

#include "common.h"
#include "context.h"
#include "error.h"
#include "tensor.h"
#include "layer.h"

EFFML_BEGIN_DECLS

EFFML_END_DECLS

#endif /* EFFML_ADAPTER_H */
