/**
 * @file effml.h
 * @brief libeffml: sample- and compute-efficient machine learning behind one C ABI.
 *
 * The only header a program includes.  Areas:
 *  - effml/context.h  allocator hooks, threads, seeded generator, errors
 *  - effml/tensor.h   typed n-d arrays, owned or wrapping caller memory
 *  - effml/io.h       .npy and safetensors files
 *  - effml/layer.h    the layer interface and the sequential container
 *  - effml/train.h    dense/activation/norm layers, loss, optimizers, data
 *  - effml/adapter.h  PHM, Compacter, LoRA, LoKr adapters
 *  - effml/sparse.h   Sparse-IFT layers, masks, RigL/SET
 *  - effml/sampler.h  SMOTE family, temperature and sensitivity sampling
 *  - effml/cascade.h  window-based early-exit cascades and metrics
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
 *   effml_npy_save(ctx, "x.npy", x);                   // numpy.load("x.npy")
 *   effml_tensor_free(x);
 *   effml_context_free(ctx);
 * @endcode
 * Every call returns an effml_status (0 = EFFML_OK); on error,
 * effml_context_last_error(ctx) says which argument was wrong and why.
 */
#ifndef EFFML_H
#define EFFML_H

#include "effml/common.h"
#include "effml/version.h"
#include "effml/error.h"
#include "effml/context.h"
#include "effml/tensor.h"
#include "effml/io.h"
#include "effml/layer.h"
#include "effml/train.h"
#include "effml/adapter.h"
#include "effml/sparse.h"
#include "effml/sampler.h"
#include "effml/cascade.h"
#include "effml/calibration.h"

#endif /* EFFML_H */
