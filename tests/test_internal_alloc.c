/* The default allocator's large blocks (lib/core/context.c): at
 * EFFML__MAP_MIN bytes and above a block gets a mapping of its own whose data
 * starts on a 2 MiB boundary and whose whole 2 MiB pages are advised
 * MADV_HUGEPAGE; the advice reaches the kernel (the mapping's VmFlags in
 * /proc/self/smaps carry "hg"); when the advice is refused the block is still
 * handed out, usable and freed (4 KiB pages); smaller blocks and every block of
 * a caller's allocator stay as they were (malloc / the caller's hook, no
 * advice); sanitizer builds keep the default allocator on malloc; and an
 * allocation the address space cannot hold fails with NULL / EFFML_E_NOMEM. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"
#include "../lib/core/internal.h"

#define MIB ((size_t)1 << 20)

/* 1 if the mapping holding `p` has VmFlags "hg" (MADV_HUGEPAGE) in
 * /proc/self/smaps, 0 if it has not, -1 if smaps cannot be read or has no
 * mapping holding p. */
static int vma_has_hugepage_advice(const void *p) {
  FILE *f = fopen("/proc/self/smaps", "r");
  if (f == NULL) return -1;
  char line[1024];
  int in = 0, found = -1;
  while (fgets(line, sizeof line, f)) {
    unsigned long lo, hi;
    if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
      in = (uintptr_t)p >= lo && (uintptr_t)p < hi;
      continue;
    }
    if (in && strncmp(line, "VmFlags:", 8) == 0) {
      found = 0;
      for (char *t = strtok(line + 8, " \n"); t; t = strtok(NULL, " \n"))
        if (strcmp(t, "hg") == 0) found = 1;
      break;
    }
  }
  fclose(f);
  return found;
}

/* the advice a recording stand-in for madvise saw */
typedef struct advice_seen {
  int calls;
  void *addr;
  size_t len;
  int advice;
} advice_seen;
static advice_seen seen; /* test-local; each Check test runs in its own process */

static int advise_refuse(void *addr, size_t len, int advice) {
  seen.calls++;
  seen.addr = addr;
  seen.len = len;
  seen.advice = advice;
  errno = EINVAL;
  return -1;
}

static int advise_record(void *addr, size_t len, int advice) {
  seen.calls++;
  seen.addr = addr;
  seen.len = len;
  seen.advice = advice;
  return madvise(addr, len, advice);
}

/* write a pattern over all n bytes and check it back */
static void fill_and_check(unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i += 4093) p[i] = (unsigned char)(i * 7u + 1u);
  p[n - 1] = 0xa5;
  for (size_t i = 0; i < n; i += 4093) ck_assert_uint_eq(p[i], (unsigned char)(i * 7u + 1u));
  ck_assert_uint_eq(p[n - 1], 0xa5);
}

START_TEST(test_map_alloc_aligned_and_advised) {
#if !EFFML__HAVE_MAP
  ck_assert_ptr_null(effml__map_alloc(40 * MIB, NULL));
#else
  const size_t n = 40 * MIB + 12345; /* not a whole number of huge pages */
  memset(&seen, 0, sizeof seen);
  unsigned char *p = (unsigned char *)effml__map_alloc(n, advise_record);
  ck_assert_ptr_nonnull(p);
  ck_assert_uint_eq((uintptr_t)p % EFFML__MAP_PAGE, 0);
  /* the advice covers the data rounded up to whole 2 MiB pages, from the data's start */
  ck_assert_int_eq(seen.calls, 1);
  ck_assert_ptr_eq(seen.addr, p);
  ck_assert_uint_eq(seen.len, 21 * EFFML__MAP_PAGE);
  ck_assert_int_eq(seen.advice, MADV_HUGEPAGE);
  /* a fresh mapping reads as zeros */
  for (size_t i = 0; i < n; i += 65521) ck_assert_uint_eq(p[i], 0);
  fill_and_check(p, n);
  /* madvise accepted it on this kernel iff the mapping now carries "hg" */
  const int kind = effml__block_kind(p);
  ck_assert_msg(kind == EFFML__BLOCK_MAPPED_ADVISED || kind == EFFML__BLOCK_MAPPED, "kind %d", kind);
  int hg = vma_has_hugepage_advice(p);
  if (hg >= 0) {
    ck_assert_int_eq(hg, kind == EFFML__BLOCK_MAPPED_ADVISED);
    /* the rounded tail up to the last whole huge page is mapped and advised too */
    ck_assert_int_eq(vma_has_hugepage_advice(p + 21 * EFFML__MAP_PAGE - 1), hg);
  }
  /* where the kernel has transparent huge pages, madvise must have taken it */
  if (access("/sys/kernel/mm/transparent_hugepage/enabled", R_OK) == 0)
    ck_assert_int_eq(kind, EFFML__BLOCK_MAPPED_ADVISED);
  effml__free(NULL, p);
  /* the whole mapping (header page, data, rounded tail) is gone */
  ck_assert_int_eq(vma_has_hugepage_advice(p), -1);
  ck_assert_int_eq(vma_has_hugepage_advice(p - 1), -1);
  ck_assert_int_eq(vma_has_hugepage_advice(p + 21 * EFFML__MAP_PAGE - 1), -1);
#endif
}
END_TEST

START_TEST(test_map_alloc_advice_refused) {
#if EFFML__HAVE_MAP
  const size_t n = 33 * MIB;
  memset(&seen, 0, sizeof seen);
  unsigned char *p = (unsigned char *)effml__map_alloc(n, advise_refuse);
  /* refused advice: the block is still handed out, aligned, writable, without "hg" */
  ck_assert_ptr_nonnull(p);
  ck_assert_int_eq(seen.calls, 1);
  ck_assert_int_eq(seen.advice, MADV_HUGEPAGE);
  ck_assert_uint_eq((uintptr_t)p % EFFML__MAP_PAGE, 0);
  ck_assert_int_eq(effml__block_kind(p), EFFML__BLOCK_MAPPED);
  int hg = vma_has_hugepage_advice(p);
  if (hg >= 0) ck_assert_int_eq(hg, 0);
  fill_and_check(p, n);
  effml__free(NULL, p);
  ck_assert_int_eq(vma_has_hugepage_advice(p), -1);
#endif
  /* size 0 and absurd sizes are refused, not wrapped */
  ck_assert_ptr_null(effml__map_alloc(0, NULL));
  ck_assert_ptr_null(effml__map_alloc(SIZE_MAX - 100, NULL));
}
END_TEST

START_TEST(test_default_allocator_threshold) {
  effml_context *ctx = tu_ctx(1);
  /* below the threshold: malloc, cache-line aligned, as before */
  void *small = effml__malloc(ctx, 1000);
  void *below = effml__malloc(ctx, EFFML__MAP_MIN - 1);
  ck_assert_ptr_nonnull(small);
  ck_assert_ptr_nonnull(below);
  ck_assert_uint_eq((uintptr_t)small % 64, 0);
  ck_assert_uint_eq((uintptr_t)below % 64, 0);
  ck_assert_int_eq(effml__block_kind(small), EFFML__BLOCK_MALLOC);
  ck_assert_int_eq(effml__block_kind(below), EFFML__BLOCK_MALLOC);
  fill_and_check((unsigned char *)below, EFFML__MAP_MIN - 1);
  /* at the threshold: its own 2 MiB-aligned mapping (malloc in sanitizer builds) */
  void *at = effml__malloc(ctx, EFFML__MAP_MIN);
  ck_assert_ptr_nonnull(at);
#if EFFML__DEFAULT_MAPS
  ck_assert_uint_eq((uintptr_t)at % EFFML__MAP_PAGE, 0);
  ck_assert_int_ne(effml__block_kind(at), EFFML__BLOCK_MALLOC);
#else
  ck_assert_uint_eq((uintptr_t)at % 64, 0);
  ck_assert_int_eq(effml__block_kind(at), EFFML__BLOCK_MALLOC);
#endif
  fill_and_check((unsigned char *)at, EFFML__MAP_MIN);
  /* calloc of a large block is zero everywhere */
  unsigned char *z = (unsigned char *)effml__calloc(ctx, 5, 8 * MIB);
  ck_assert_ptr_nonnull(z);
#if EFFML__DEFAULT_MAPS
  {
    /* a mapped block is zero already: calloc leaves its pages untouched (no memset pass) */
    ck_assert_int_ne(effml__block_kind(z), EFFML__BLOCK_MALLOC);
    const size_t pg = (size_t)sysconf(_SC_PAGESIZE), np = 40 * MIB / pg;
    unsigned char *vec = (unsigned char *)malloc(np);
    ck_assert_ptr_nonnull(vec);
    ck_assert_int_eq(mincore(z, 40 * MIB, vec), 0);
    size_t resident = 0;
    for (size_t i = 0; i < np; ++i) resident += vec[i] & 1u;
    free(vec);
    ck_assert_msg(resident < np / 2, "calloc touched %zu of %zu pages", resident, np);
  }
#endif
  for (size_t i = 0; i < 40 * MIB; i += 4096) ck_assert_uint_eq(z[i], 0);
  ck_assert_uint_eq(z[40 * MIB - 1], 0);
  effml__free(ctx, z);
  effml__free(ctx, at);
  effml__free(ctx, below);
  effml__free(ctx, small);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_tensor_through_default_allocator) {
  effml_context *ctx = tu_ctx(2);
  const int64_t shape[2] = {400000, 33}; /* 105.6 MB of f64, zeroed */
  effml_tensor *t = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 2, shape, &t), EFFML_OK);
  const double *d = (const double *)effml_tensor_data(t);
#if EFFML__DEFAULT_MAPS
  ck_assert_uint_eq((uintptr_t)d % EFFML__MAP_PAGE, 0);
  ck_assert_int_ne(effml__block_kind(d), EFFML__BLOCK_MALLOC);
#endif
  for (int64_t i = 0; i < shape[0] * shape[1]; i += 997) ck_assert(d[i] == 0.0);
  effml_tensor_free(t);
  effml_context_free(ctx);
}
END_TEST

/* a caller's allocator: every block comes from it, none is advised */
typedef struct hook {
  int calls;
  size_t largest;
  void *last;
} hook;

static void *hook_alloc(void *ud, size_t size) {
  hook *h = (hook *)ud;
  h->calls++;
  if (size > h->largest) h->largest = size;
  h->last = malloc(size);
  return h->last;
}

static void hook_free(void *ud, void *p) {
  (void)ud;
  free(p);
}

START_TEST(test_caller_allocator_untouched) {
  hook h = {0, 0, NULL};
  effml_context_options o;
  effml_context_options_init(&o);
  o.alloc = hook_alloc;
  o.free = hook_free;
  o.alloc_user_data = &h;
  effml_context *ctx = NULL;
  ck_assert_int_eq(effml_context_create(&o, &ctx), EFFML_OK);
  h.calls = 0;
  h.largest = 0;
  const size_t n = 48 * MIB;
  unsigned char *p = (unsigned char *)effml__malloc(ctx, n);
  ck_assert_ptr_nonnull(p);
  ck_assert_int_eq(h.calls, 1);
  ck_assert_uint_ge(h.largest, n);
  /* the block lies inside what the hook returned, cache-line aligned */
  ck_assert((uintptr_t)p >= (uintptr_t)h.last && (uintptr_t)p - (uintptr_t)h.last <= 72);
  ck_assert_uint_eq((uintptr_t)p % 64, 0);
  /* no huge-page advice on the caller's memory (glibc maps a block this size on its own) */
  int hg = vma_has_hugepage_advice(p + n / 2);
  if (hg >= 0) ck_assert_int_eq(hg, 0);
  fill_and_check(p, n);
  effml__free(ctx, p);
  effml_context_free(ctx);
}
END_TEST

START_TEST(test_no_address_space) {
#if EFFML__DEFAULT_MAPS
  /* in a child with a 64 MiB address-space limit a 256 MiB block cannot be had:
   * mmap fails, the malloc fallback fails, NULL / EFFML_E_NOMEM */
  fflush(NULL);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    effml_context *ctx = NULL;
    if (effml_context_create(NULL, &ctx) != EFFML_OK) _exit(10);
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl) != 0) _exit(11);
    rl.rlim_cur = 0; /* set below from the current usage */
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long vm_pages = 0;
    if (!f || fscanf(f, "%lu", &vm_pages) != 1) _exit(12);
    fclose(f);
    rl.rlim_cur = (rlim_t)(vm_pages * (unsigned long)sysconf(_SC_PAGESIZE) + 64 * MIB);
    if (setrlimit(RLIMIT_AS, &rl) != 0) _exit(13);
    if (effml__malloc(ctx, 256 * MIB) != NULL) _exit(14);
    const int64_t shape[2] = {1 << 20, 32}; /* 256 MiB */
    effml_tensor *t = NULL;
    if (effml_tensor_create(ctx, EFFML_F64, 2, shape, &t) != EFFML_E_NOMEM || t != NULL) _exit(15);
    if (!strstr(effml_context_last_error(ctx), "out of memory")) _exit(16);
    /* and a block that fits still comes back mapped */
    void *ok = effml__malloc(ctx, EFFML__MAP_MIN);
    if (ok == NULL || effml__block_kind(ok) == EFFML__BLOCK_MALLOC) _exit(17);
    effml__free(ctx, ok);
    effml_context_free(ctx);
    _exit(0);
  }
  int status = 0;
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
#endif
}
END_TEST

int main(void) {
  Suite *s = suite_create("internal_alloc");
  TCase *tc = tcase_create("alloc");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_map_alloc_aligned_and_advised);
  tcase_add_test(tc, test_map_alloc_advice_refused);
  tcase_add_test(tc, test_default_allocator_threshold);
  tcase_add_test(tc, test_tensor_through_default_allocator);
  tcase_add_test(tc, test_caller_allocator_untouched);
  tcase_add_test(tc, test_no_address_space);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
