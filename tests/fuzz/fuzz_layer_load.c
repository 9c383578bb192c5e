/*
 * libFuzzer target for effml_layer_load(): arbitrary safetensors bytes loaded
 * into a fixed model (dense 4 -> 3, ReLU, dense 3 -> 2) under prefix "m."
 * (strict and lenient) and without a prefix.  Any bytes must give a status; on error the message is
 * set and no parameter changed (all-or-nothing); on success a forward pass of
 * the loaded model must run.
 * Built by tests/fuzz/build.sh; replayed by CTest (fuzz_replay_layer_load).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "effml.h"
#include "fuzz_tmpfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static effml_context *ctx;
static effml_layer *model;
static effml_tensor *x, *y;

static void setup(void) {
  if (effml_context_create(NULL, &ctx) != EFFML_OK) abort();
  effml_layer *l = NULL;
  if (effml_layer_sequential_create(ctx, &model) != EFFML_OK) abort();
  if (effml_layer_dense_create(ctx, 4, 3, 1, &l) || effml_layer_sequential_add(ctx, model, l)) abort();
  if (effml_layer_activation_create(ctx, EFFML_LAYER_ACT_RELU, &l) ||
      effml_layer_sequential_add(ctx, model, l))
    abort();
  if (effml_layer_dense_create(ctx, 3, 2, 1, &l) || effml_layer_sequential_add(ctx, model, l)) abort();
  int64_t xs[2] = {2, 4}, ys[2] = {2, 2};
  if (effml_tensor_create(ctx, EFFML_F32, 2, xs, &x) || effml_tensor_create(ctx, EFFML_F32, 2, ys, &y))
    abort();
}

/* Sum of every parameter's bytes, to see whether a failed load changed anything. */
static uint64_t fingerprint(void) {
  uint64_t h = 1469598103934665603ULL;
  int32_t np = effml_layer_num_params(model);
  for (int32_t i = 0; i < np; ++i) {
    const effml_tensor *t = effml_layer_param(model, i);
    const unsigned char *p = effml_tensor_data_const(t);
    for (size_t k = 0; k < effml_tensor_nbytes(t); ++k) h = (h ^ p[k]) * 1099511628211ULL;
  }
  return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (model == NULL) setup();
  if (size > (1u << 20)) return 0;
  const char *path = fuzz_write("in.safetensors", data, size);
  static const char *const prefixes[3] = {"m.", "m.", ""};
  static const uint32_t flags[3] = {EFFML_LAYER_LOAD_STRICT, 0, 0};
  for (int c = 0; c < 3; ++c) {
    uint64_t before = fingerprint();
    effml_context_clear_error(ctx);
    effml_status st = effml_layer_load(ctx, model, path, prefixes[c], flags[c]);
    if (st == EFFML_OK) {
      if (effml_layer_forward(ctx, model, x, y, EFFML_LAYER_MODE_INFER) != EFFML_OK) abort();
    } else if (effml_context_last_error(ctx)[0] == '\0' || fingerprint() != before) {
      abort();
    }
  }
  return 0;
}
