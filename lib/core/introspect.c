/* What a binding asks the library it loaded: the ISA level its kernels
 * dispatch to, and the size of every public option struct (so a mirror of a
 * struct can be checked against the library, not only against the header). */
#include <string.h>

#include "internal.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#  define EFFML__X86_CPU 1
#endif

/* Computed on every call (a few cpuid reads): cheap, and no global state. */
int32_t effml__isa_level(void) {
#ifdef EFFML__X86_CPU
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return EFFML_CORE_ISA_AVX512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return EFFML_CORE_ISA_AVX2;
#endif
  return EFFML_CORE_ISA_PORTABLE;
}

int32_t effml_core_isa_level(void) { return effml__isa_level(); }

const char *effml_core_isa_name(int32_t level) {
  switch (level) {
    case EFFML_CORE_ISA_PORTABLE: return "portable";
    case EFFML_CORE_ISA_AVX2: return "avx2";
    case EFFML_CORE_ISA_AVX512: return "avx512";
    default: return "unknown";
  }
}

/* Every public struct that starts with `uint32_t struct_size`, in header order
 * (tests/test_core.c checks that the headers hold no other). */
#define EFFML__STRUCT(t) {#t, sizeof(t)}
static const struct {
  const char *name;
  size_t size;
} effml__structs[] = {
    EFFML__STRUCT(effml_context_options),
    EFFML__STRUCT(effml_optimizer_options),
    EFFML__STRUCT(effml_train_options),
    EFFML__STRUCT(effml_adapter_phm_options),
    EFFML__STRUCT(effml_adapter_options),
    EFFML__STRUCT(effml_adapter_lora_options),
    EFFML__STRUCT(effml_adapter_lokr_options),
    EFFML__STRUCT(effml_sparse_options),
    EFFML__STRUCT(effml_dst_options),
    EFFML__STRUCT(effml_sampler_resample_options),
    EFFML__STRUCT(effml_sampler_temperature_schedule),
    EFFML__STRUCT(effml_sampler_leverage_options),
    EFFML__STRUCT(effml_cascade_options),
    EFFML__STRUCT(effml_cascade_threshold_options),
    EFFML__STRUCT(effml_calibration_options),
};
#undef EFFML__STRUCT

#define EFFML__N_STRUCTS ((int32_t)(sizeof effml__structs / sizeof effml__structs[0]))

size_t effml_core_struct_size(const char *name) {
  if (!name) return 0;
  for (int32_t i = 0; i < EFFML__N_STRUCTS; ++i)
    if (strcmp(effml__structs[i].name, name) == 0) return effml__structs[i].size;
  return 0;
}

const char *effml_core_struct_name(int32_t i) {
  return i >= 0 && i < EFFML__N_STRUCTS ? effml__structs[i].name : NULL;
}
