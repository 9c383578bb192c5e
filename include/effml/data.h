/**
 * @file effml/data.h
 * @brief Data sets: IDX files and Fashion-MNIST.
 *
 * Readers for the IDX format (LeCun's MNIST files) and the Fashion-MNIST
 * data set as installed by Debian's dataset-fashion-mnist.
 *
 * @code
 *   effml_tensor *x, *y;
 *   effml_data_fashion_mnist_load(ctx, NULL, EFFML_DATA_SPLIT_TRAIN, &x, &y);  // f32 [60000, 784], i32 [60000]
 *   ...
 *   effml_tensor_free(x);  effml_tensor_free(y);
 * @endcode
 *
 * Threads: the loaders only touch their own outputs and the context.
 */
#ifndef EFFML_DATA_H
#define EFFML_DATA_H

#include "core.h"
#include "tensor.h"

EFFML_BEGIN_DECLS

#define EFFML_DATA_SPLIT_TRAIN 0 /**< 60 000 training images */
#define EFFML_DATA_SPLIT_TEST 1  /**< 10 000 test images */

/**
 * Load Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) from the IDX files
 * `train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`,
 * `t10k-images-idx3-ubyte.gz`, `t10k-labels-idx1-ubyte.gz` (the names the
 * Debian package dataset-fashion-mnist installs; uncompressed files without
 * `.gz` are accepted too).
 * @param dir     NULL: /usr/share/datasets/fashion-mnist
 * @param split   EFFML_DATA_SPLIT_TRAIN or EFFML_DATA_SPLIT_TEST
 * @param images  receives f32 `[n, 784]`, pixel/255 in [0, 1], owned by the caller
 * @param labels  receives i32 `[n]` in [0, 9], owned by the caller
 * @return EFFML_E_NOT_FOUND (files absent: the message names the path and
 *         the Debian package), EFFML_E_FORMAT (malformed or inconsistent
 *         files), EFFML_E_IO, EFFML_E_INVALID_ARG, EFFML_E_NOMEM.  On error
 *         neither output is written.
 */
EFFML_API effml_status effml_data_fashion_mnist_load(effml_context *ctx, const char *dir, int32_t split,
                                                effml_tensor **images, effml_tensor **labels);

/**
 * Load one IDX file (LeCun's MNIST format: two zero bytes, a type byte, the
 * number of dimensions, big-endian u32 sizes, big-endian data), gzipped or
 * raw (detected).  Types 0x08 -> EFFML_U8, 0x09 -> EFFML_I8, 0x0B ->
 * EFFML_I16, 0x0C -> EFFML_I32, 0x0D -> EFFML_F32, 0x0E -> EFFML_F64.
 * @param out  receives a new contiguous tensor with the file's shape, owned by the caller
 * @return EFFML_E_NOT_FOUND (no such file), EFFML_E_IO, EFFML_E_FORMAT (bad
 *         magic, unknown type, zero or too many dimensions, truncated data,
 *         trailing bytes), EFFML_E_OVERFLOW, EFFML_E_NOMEM.
 */
EFFML_API effml_status effml_data_idx_load(effml_context *ctx, const char *path, effml_tensor **out);

EFFML_END_DECLS

#endif /* EFFML_DATA_H */
