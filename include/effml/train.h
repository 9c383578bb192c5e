/**
 * @file effml/train.h
 * @brief Training primitives: dense/activation/dropout/layernorm layers, loss, optimizers, initialisers, Fashion-MNIST loader (issue 3)
 */
#ifndef EFFML_TRAIN_H
#define EFFML_TRAIN_H

#include "common.h"
#include "context.h"
#include "error.h"
#include "tensor.h"
#include "layer.h"

EFFML_BEGIN_DECLS

EFFML_END_DECLS

#endif /* EFFML_TRAIN_H */
