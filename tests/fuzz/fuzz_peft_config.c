/*
 * libFuzzer target for adapter_config.json, through the public PEFT LoRA
 * loader effml_adapter_lora_load_peft(): the input bytes are the config; the
 * weights (adapter_model.safetensors) are a fixed valid pair of modules
 * "q_proj" and "v_proj" (8 -> 8, r 4) written once by effml_adapter_lora_save_peft().
 * Any config must give a status; an error must name itself and leave every
 * layer unchanged (all-or-nothing); success must set a finite scaling.
 * Built by tests/fuzz/build.sh; replayed by CTest (fuzz_replay_peft_config).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "effml.h"
#include "fuzz_tmpfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static effml_context *ctx;
static effml_layer *layers[2];
static const char *const names[2] = {"base_model.model.q_proj", "base_model.model.v_proj"};

static void setup(void) {
  if (effml_context_create(NULL, &ctx) != EFFML_OK) abort();
  effml_adapter_lora_options o;
  effml_adapter_lora_options_init(&o);
  o.rank = 4;
  for (int i = 0; i < 2; ++i) {
    effml_layer *base = NULL;
    if (effml_layer_dense_create(ctx, 8, 8, 1, &base) != EFFML_OK) abort();
    if (effml_adapter_lora_create(ctx, base, &o, &layers[i]) != EFFML_OK) abort();
  }
  if (effml_adapter_lora_save_peft(ctx, fuzz_scratch_dir(), 2, layers, names, NULL) != EFFML_OK)
    abort();
  /* remember the saved config's path so the cleanup removes it with the weights */
  fuzz_write("adapter_config.json", "{}", 2);
  static const char w[] = "adapter_model.safetensors";
  char path[4200];
  snprintf(path, sizeof path, "%s/%s", fuzz_scratch_dir(), w);
  memcpy(fuzz_files[fuzz_nfiles++], path, sizeof path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (ctx == NULL) setup();
  if (size > (1u << 16)) return 0;
  fuzz_write("adapter_config.json", data, size);
  double before[2];
  for (int i = 0; i < 2; ++i) before[i] = effml_adapter_lora_scaling(layers[i]);
  effml_context_clear_error(ctx);
  effml_status st = effml_adapter_lora_load_peft(ctx, fuzz_scratch_dir(), 2, layers, names);
  if (st == EFFML_OK) {
    for (int i = 0; i < 2; ++i)
      if (!isfinite(effml_adapter_lora_scaling(layers[i]))) abort();
  } else {
    if (effml_context_last_error(ctx)[0] == '\0') abort();
    for (int i = 0; i < 2; ++i)
      if (effml_adapter_lora_scaling(layers[i]) != before[i]) abort(); /* all-or-nothing */
  }
  return 0;
}
