/*
 * The registry of layer kinds: every effml__layer_ops table, listed once.
 *
 * This is the one place a new kind is registered (docs/architecture.md,
 * "How to add a layer kind").  Nothing in the library looks a kind up here:
 * generic code works through each layer's own ops pointer.  The registry is
 * what the conformance suite (tests/test_internal_conformance.c) enumerates,
 * so a kind listed here without a conformance row fails that suite.  It sits
 * above every area that defines a kind, so no lower area depends on it.
 */
#include "../layer/layer_internal.h"

/* The tables (defined in the kinds' own files). */
extern const effml__layer_ops effml__sequential_ops, effml__dense_ops, effml__activation_ops,
    effml__dropout_ops, effml__layernorm_ops;
extern const effml__layer_ops effml__sparse_linear_ops, effml__sparse_wide_ops,
    effml__sparse_parallel_ops, effml__sparse_factorized_ops, effml__sparse_doped_ops;
extern const effml__layer_ops effml__lora_ops, effml__lokr_ops, effml__phm_ops,
    effml__adapter_block_ops, effml__conv1d_ops, effml__ia3_ops, effml__loha_ops, effml__vera_ops;

static const effml__layer_ops *const KINDS[] = {
    /* nn */
    &effml__sequential_ops,
    &effml__dense_ops,
    &effml__activation_ops,
    &effml__dropout_ops,
    &effml__layernorm_ops,
    /* sparse */
    &effml__sparse_linear_ops,
    &effml__sparse_wide_ops,
    &effml__sparse_parallel_ops,
    &effml__sparse_factorized_ops,
    &effml__sparse_doped_ops,
    /* adapter */
    &effml__lora_ops,
    &effml__lokr_ops,
    &effml__phm_ops,
    &effml__adapter_block_ops,
    &effml__conv1d_ops,
    &effml__ia3_ops,
    &effml__loha_ops,
    &effml__vera_ops,
};

int32_t effml__layer_kind_count(void) { return (int32_t)(sizeof KINDS / sizeof KINDS[0]); }

const effml__layer_ops *effml__layer_kind_at(int32_t i) {
  return (i >= 0 && i < effml__layer_kind_count()) ? KINDS[i] : NULL;
}
