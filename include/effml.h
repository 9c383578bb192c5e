/**
 * @file effml.h
 * @brief libeffml: sample- and compute-efficient machine learning behind one C ABI.
 *
 * The only header a program includes.  One header per area, each implemented
 * in the folder of the same name under lib/:
 *  - effml/core.h     export macros, version, status codes, the context
 *                     (allocator hooks, threads, seeded generator, errors)
 *  - effml/tensor.h   typed n-d arrays, owned or wrapping caller memory; initialisers
 *  - effml/io.h       .npy and safetensors files
 *  - effml/data.h     IDX files and Fashion-MNIST
 *  - effml/layer.h    the layer interface, sequential container, dense,
 *                     activation, dropout and layer-norm layers
 *  - effml/optim.h    SGD and AdamW, learning-rate schedules, gradient clipping
 *  - effml/train.h    softmax cross-entropy, the training loop, batched inference
 *  - effml/metrics.h  accuracy, NLL, selective-classification and OOD metrics
 *  - effml/adapter.h  PHM, Compacter, LoRA, LoKr adapters
 *  - effml/sparse.h   Sparse-IFT layers, masks, RigL/SET
 *  - effml/sampler.h  SMOTE family, temperature and sensitivity sampling
 *  - effml/cascade.h  window-based early-exit cascades
 *
 * A tiny program:
 * @code
 *   #include <effml.h>
 *   effml_context *ctx;
 *   effml_context_create(NULL, &ctx);                  // defaults
 *   int64_t shape[2] = {2, 3};                         // 2 rows, 3 columns
 *   effml_tensor *x;
 *   effml_tensor_create(ctx, EFFML_F32, 2, shape, &x); // zeroed, row-major
 *   effml_tensor_fill(ctx, x, 0.5);
 *   effml_io_npy_save(ctx, "x.npy", x);                   // numpy.load("x.npy")
 *   effml_tensor_free(x);
 *   effml_context_free(ctx);
 * @endcode
 * Every call returns an effml_status (0 = EFFML_OK); on error,
 * effml_context_last_error(ctx) says which argument was wrong and why.
 */
#ifndef EFFML_H
#define EFFML_H

#include "effml/core.h"
#include "effml/tensor.h"
#include "effml/io.h"
#include "effml/data.h"
#include "effml/layer.h"
#include "effml/optim.h"
#include "effml/train.h"
#include "effml/metrics.h"
#include "effml/adapter.h"
#include "effml/sparse.h"
#include "effml/sampler.h"
#include "effml/cascade.h"
#include "effml/calibration.h"

#endif /* EFFML_H */
