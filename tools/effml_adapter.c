/* effml-adapter: merge a PEFT adapter into a safetensors model, or describe one,
 * without Python or torch.
 *
 *   effml-adapter merge --base MODEL.safetensors --adapter DIR --out MERGED.safetensors [--dry-run]
 *                       [--progress | --no-progress]
 *   effml-adapter merge --base DIR/model.safetensors.index.json --adapter DIR
 *                       --out OUTDIR/model.safetensors.index.json [...]
 *   effml-adapter info DIR
 *   effml-adapter --help
 *
 * info prints the type, fan_in_fan_out, each module's r, alpha and parameter count, and each
 * dropout field of the type: what adapter_config.json says and what the library applies in
 * training (effml_adapter_peft_dropouts(); merging never drops).
 *
 * merge streams the base file tensor by tensor (pread/write, never the whole model
 * in memory): the header (names, dtypes, shapes, offsets, __metadata__) is copied
 * verbatim, every tensor the adapter does not touch is copied byte for byte (any
 * dtype, F8 included), and each adapted module's "X.weight" (module
 * "base_model.model.X") and "X.bias" are converted to f32,
 * merged by the library's own merge (LoRA, rsLoRA, DoRA, lora_bias, patterns,
 * fan_in_fan_out, LoKr) and rounded once back to its dtype (F32, F16, BF16).
 * Everything is checked before the first byte is written; the output is written
 * under a temporary name and renamed, so it is never left half-written, drop-behind (each 16 MiB
 * piece sent to disk as written and dropped from the page cache once there: see "Drop-behind"
 * below).
 * Progress: one line per tensor on stderr ("[k/N] p% merging|copying NAME"), redrawn in
 * place when stderr is a terminal (the default there), one line each with --progress
 * when it is not; --no-progress turns it off.
 * Ctrl-C (SIGINT) or SIGTERM stops the merge at the next tensor or 16 MiB piece (and
 * the adapter load, through the context's cancel flag): the temporary file is removed,
 * --out keeps what it held before, and the exit status is 128 + the signal number.
 *
 * A sharded checkpoint: --base DIR/model.safetensors.index.json (Hugging Face's index:
 * "metadata" {"total_size", "total_parameters"} and "weight_map" tensor -> shard file; any
 * other field, a shard that cannot be read, a tensor weight_map names that its shard lacks, a
 * shard tensor weight_map does not list, is an error naming it) and --out OUTDIR/NAME.index.json:
 * every shard is merged as a single file would be, into OUTDIR under its own name, and the index
 * is written with total_size/total_parameters recomputed (each must be a non-negative integer
 * in the base index; a value that does not match the shards is not an error: it is replaced by
 * the recomputed one).  A module's weight and bias may lie in
 * different shards.  All shards and the index are written under temporary names first and
 * renamed only when every one is complete (the renames are not interrupted), so a signal or an
 * error leaves OUTDIR as it was.  OUTDIR may not be the base's folder unless --out is the base
 * index itself (merging in place).  Memory as for one file: the buffers of the largest merged
 * tensor, the 16 MiB staging buffer, and the shards' headers; plus, for a module whose weight and
 * bias are not adjacent in one file (a bias in another shard), the merged bytes of the one written
 * later, kept from the module's single merge until it is written (a bias: out_features values; a
 * weight only when its bias comes first with other tensors between them).
 * Exit status: 0 ok (--help: usage on stdout), 1 refused or failed (message on stderr),
 * 2 usage error (unknown option, missing argument), 130 / 143 interrupted (SIGINT / SIGTERM). */
#define _GNU_SOURCE /* sync_file_range (Linux); everything else is POSIX.1-2008 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "effml.h"

typedef struct entry {
  const char *name; /* inside the cJSON tree */
  int32_t dtype;    /* EFFML_F32/F16/BF16, or 0 for dtypes we only copy */
  int32_t ndim;
  int64_t shape[8];
  uint64_t begin, end;
  int64_t module; /* adapter module index whose weight/bias this is, or -1 */
  int is_bias;
  int fd;          /* its file (the shard's, for a sharded checkpoint) */
  uint64_t data0;  /* offset of that file's tensor data */
  void *stash;     /* its merged file bytes, kept from its module's merge until it is written (malloc) */
} entry;

static const char USAGE[] =
    "usage: effml-adapter merge --base MODEL.safetensors --adapter DIR --out MERGED.safetensors [--dry-run]\n"
    "                           [--progress | --no-progress]\n"
    "       effml-adapter merge --base DIR/model.safetensors.index.json --adapter DIR\n"
    "                           --out OUTDIR/model.safetensors.index.json [--dry-run] [--progress | --no-progress]\n"
    "       effml-adapter info DIR\n"
    "       effml-adapter --help\n";

/* A usage error: the usage on stderr, exit status 2. */
static int usage(void) {
  fputs(USAGE, stderr);
  return 2;
}

/* --help: the usage on stdout, exit status 0. */
static int help(void) {
  fputs(USAGE, stdout);
  return 0;
}

/* ---- interruption (SIGINT/SIGTERM) and progress ---- */

static volatile sig_atomic_t g_signal;  /* the signal that asked to stop, or 0 */
static effml_context *volatile g_ctx;    /* the merge's context: its cancel flag stops library calls */

static void on_signal(int sig) {
  g_signal = sig;
  effml_context *ctx = g_ctx;
  if (ctx) effml_context_set_cancel(ctx, 1); /* documented safe in a signal handler */
}

/* Install (on = 1) or remove the handlers for SIGINT and SIGTERM.  SA_RESTART: reads and
 * writes resume, the loop notices g_signal between tensors and 16 MiB pieces. */
static void catch_signals(int on) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on ? on_signal : SIG_DFL;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
}

/* Progress display: 0 off, 1 one line redrawn in place (a terminal), 2 one line per tensor. */
typedef struct progress {
  int mode;
  int n;            /* tensors in all */
  uint64_t total;   /* bytes of tensor data in all */
  int drawn;        /* mode 1: a line is on screen */
} progress;

static void progress_show(progress *p, int k, uint64_t done, const char *what, const char *name) {
  double pct = p->total ? 100.0 * (double)done / (double)p->total : 100.0;
  if (p->mode == 1) {
    fprintf(stderr, "\r\033[Keffml-adapter: [%d/%d] %3.0f%% %s %.60s", k, p->n, pct, what, name);
    fflush(stderr);
    p->drawn = 1;
  } else if (p->mode == 2) {
    fprintf(stderr, "effml-adapter: [%d/%d] %.1f%% %s %s\n", k, p->n, pct, what, name);
  }
}

/* End the redrawn line before any other message. */
static void progress_break(progress *p) {
  if (p->drawn) fputc('\n', stderr);
  p->drawn = 0;
}

static int fail_ctx(effml_context *ctx, const char *what) {
  fprintf(stderr, "effml-adapter: %s: %s\n", what, effml_context_last_error(ctx));
  return 1;
}

static int read_full(int fd, void *buf, size_t n, uint64_t off) {
  char *p = (char *)buf;
  while (n > 0) {
    ssize_t r = pread(fd, p, n, (off_t)off);
    if (r <= 0) return -1;
    p += r;
    n -= (size_t)r;
    off += (uint64_t)r;
  }
  return 0;
}

/* The output goes through one staging buffer whose size is a multiple of the page size, so that
 * every write() starts at a page-aligned file offset and covers whole pages (except the last):
 * tensors start at arbitrary offsets, and unaligned writes into the page cache cost the kernel
 * about 4x the CPU time of aligned ones (measured on the bench's 1 GiB file).
 *
 * Drop-behind: the output is a new file (a temporary one, renamed at the end) while the old
 * output usually still holds its pages in the page cache, so every page written needs a page of
 * free memory.  On the virtual machines this was measured on, free memory is handed back to the
 * host, and the kernel's copy into such a page costs several times a copy into one just freed:
 * writing a 1 GiB file beside an existing one took 1.2-2.4 s of system time, against 0.4-0.7 s
 * for overwriting a file in place (O_TRUNC frees its pages first, and the writes reuse them).  So
 * each 16 MiB piece is sent to disk as soon as it is written (sync_file_range), and the piece
 * before it, once on disk, is dropped from the cache (POSIX_FADV_DONTNEED): the next pieces reuse
 * those pages, and the tool's system time is the in-place copy's (0.5-0.6 s for 1 GiB).  The disk
 * writes are those fsync() makes at the end anyway, only started earlier.  Where
 * sync_file_range() is not available the writes are plain. */
typedef struct outw {
  int fd;
  char *buf;
  size_t cap, len;
  uint64_t off;     /* bytes written to the file so far */
  uint64_t dropped; /* bytes from the start on disk and dropped from the page cache */
  int no_drop;      /* sync_file_range() not supported here: plain writes */
} outw;

/* Start writeback of [off, off + n) and drop what was written before it, once on disk (see
 * above).  -1 with errno on a write-back error (then reported once, here, not by fsync). */
static int ow_drop_behind(outw *w, uint64_t off, uint64_t n) {
#if defined(__linux__) && defined(SYNC_FILE_RANGE_WRITE)
  if (w->no_drop) return 0;
  if (sync_file_range(w->fd, (off_t)off, (off_t)n, SYNC_FILE_RANGE_WRITE) != 0) {
    if (errno == ENOSYS || errno == EINVAL || errno == ESPIPE || errno == EOPNOTSUPP) {
      w->no_drop = 1;
      return 0;
    }
    return -1;
  }
  if (off > w->dropped) {
    const uint64_t p = w->dropped, l = off - p;
    if (sync_file_range(w->fd, (off_t)p, (off_t)l,
                        SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER) != 0)
      return -1;
    (void)posix_fadvise(w->fd, (off_t)p, (off_t)l, POSIX_FADV_DONTNEED); /* a hint */
    w->dropped = off;
  }
#else
  (void)w;
  (void)off;
  (void)n;
#endif
  return 0;
}

static int ow_flush(outw *w) {
  size_t done = 0;
  while (done < w->len) {
    ssize_t k = write(w->fd, w->buf + done, w->len - done);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return -1;
    done += (size_t)k;
  }
  const uint64_t at = w->off;
  w->off += w->len;
  w->len = 0;
  return ow_drop_behind(w, at, w->off - at);
}

static int write_full(outw *w, const void *src, size_t n) {
  const char *p = (const char *)src;
  while (n > 0) {
    size_t c = w->cap - w->len < n ? w->cap - w->len : n;
    memcpy(w->buf + w->len, p, c);
    w->len += c;
    p += c;
    n -= c;
    if (w->len == w->cap && ow_flush(w)) return -1;
  }
  return 0;
}

/* Copy n bytes of fd at off to the output, read straight into the staging buffer. */
static int copy_range(outw *w, int fd, uint64_t off, size_t n) {
  while (n > 0) {
    if (g_signal) return -1; /* checked between 16 MiB pieces */
    size_t c = w->cap - w->len < n ? w->cap - w->len : n;
    if (read_full(fd, w->buf + w->len, c, off)) return -1;
    w->len += c;
    off += c;
    n -= c;
    if (w->len == w->cap && ow_flush(w)) return -1;
  }
  return 0;
}

static int cmp_entry(const void *a, const void *b) {
  const entry *x = (const entry *)a, *y = (const entry *)b;
  return (x->begin > y->begin) - (x->begin < y->begin);
}

/* What adapter_config.json in `dir` says for `key`, as compact JSON in buf ("absent" when the key
 * is not there, "?" when the file cannot be read: info runs after open() has read it). */
static const char *config_says(const cJSON *cfg, const char *key, char *buf, size_t len) {
  const cJSON *v = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, key) : NULL;
  char *t = v ? cJSON_PrintUnformatted(v) : NULL;
  snprintf(buf, len, "%s", cfg == NULL ? "?" : v == NULL ? "absent" : t ? t : "?");
  cJSON_free(t);
  return buf;
}

/* The JSON file at `p`, parsed (NULL when it cannot be read or parsed; errno from the read). */
static cJSON *read_json_file(const char *p) {
  FILE *f = fopen(p, "rb");
  if (f == NULL) return NULL;
  char *b = NULL;
  long n = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
  if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && (b = (char *)malloc((size_t)n + 1)) != NULL &&
      fread(b, 1, (size_t)n, f) == (size_t)n)
    b[n] = '\0';
  else {
    free(b);
    b = NULL;
  }
  fclose(f);
  cJSON *j = b ? cJSON_Parse(b) : NULL;
  free(b);
  return j;
}

/* The dropout lines of info: for each dropout field of the type, what adapter_config.json says
 * (or "absent", PEFT's default then) and what the library applies (effml_adapter_peft_dropouts:
 * what effml_adapter_peft_attach() sets on the layers; training only, never in a merge). */
static int print_dropouts(effml_context *ctx, const effml_adapter_peft *a, const char *dir) {
  double p = 0, rank_p = 0, module_p = 0;
  int32_t scale = 0;
  if (effml_adapter_peft_dropouts(ctx, a, &p, &rank_p, &module_p, &scale) != EFFML_OK) return fail_ctx(ctx, dir);
  const char *type = effml_adapter_peft_type(a);
  if (strcmp(type, "IA3") == 0) {
    printf("dropouts: none (IA3 has no dropout)\n");
    return 0;
  }
  char cp[4096];
  snprintf(cp, sizeof cp, "%s/adapter_config.json", dir);
  cJSON *cfg = read_json_file(cp);
  char b[128];
  printf("dropouts (training only; merge and inference never drop):\n");
  if (strcmp(type, "LOKR") == 0 || strcmp(type, "LOHA") == 0) {
    printf("  rank_dropout: config %s; applied p=%g%s\n", config_says(cfg, "rank_dropout", b, sizeof b), rank_p,
           rank_p > 0 ? " (mask over the rows of the delta, drawn per forward)" : " (off)");
    printf("  module_dropout: config %s; applied p=%g%s\n", config_says(cfg, "module_dropout", b, sizeof b), module_p,
           module_p > 0 ? " (the whole delta skipped with probability p per forward)" : " (off)");
    if (strcmp(type, "LOKR") == 0)
      printf("  rank_dropout_scale: config %s; applied: %s\n", config_says(cfg, "rank_dropout_scale", b, sizeof b),
             scale ? "the rank mask divided by its mean" : "the rank mask not rescaled");
    else
      printf("  rank_dropout_scale: not a LoHa field; applied: the rank mask divided by its mean (always, as PEFT's "
             "LoHa)\n");
  } else {
    const char *key = strcmp(type, "VERA") == 0 ? "vera_dropout" : "lora_dropout";
    printf("  %s: config %s; applied p=%g%s\n", key, config_says(cfg, key, b, sizeof b), p,
           p > 0 ? " (inverted dropout of the adapter's input)" : " (off)");
  }
  cJSON_Delete(cfg);
  return 0;
}

/* Describe the adapter in `dir` after the same checks merge makes when it opens it (config keys,
 * tensor names, every module's required tensors and their rank against r / rank_pattern, finite
 * values): 0, or 1 with the reason on stderr. */
static int info(const char *dir) {
  effml_context *ctx = NULL;
  if (effml_context_create(NULL, &ctx) != EFFML_OK) return 1;
  effml_adapter_peft *a = NULL;
  if (effml_adapter_peft_open(ctx, dir, &a) != EFFML_OK) { /* list every problem, not only the first */
    size_t len = 1 << 16;
    char *rep = (char *)malloc(len), *first = strdup(effml_context_last_error(ctx)); /* whole, any length */
    int64_t np = 0;
    int st = rep ? effml_adapter_peft_problems(ctx, dir, rep, len, &np) : EFFML_E_NOMEM;
    while (st == EFFML_OK && strlen(rep) + 1 >= len && len < ((size_t)1 << 28)) { /* the report filled it: grow */
      char *bigger = (char *)realloc(rep, len <<= 4);
      if (bigger == NULL) break;
      rep = bigger;
      st = effml_adapter_peft_problems(ctx, dir, rep, len, &np);
    }
    if (rep == NULL || st != EFFML_OK || np <= 1) {
      fprintf(stderr, "effml-adapter: %s: %s\n", dir, first ? first : "cannot open the adapter (out of memory)");
      free(rep); /* one problem: open's own message */
      free(first);
      effml_context_free(ctx);
      return 1;
    }
    free(first);
    fprintf(stderr, "effml-adapter: %s: %lld problem%s; this adapter cannot be merged:\n", dir, (long long)np,
            np == 1 ? "" : "s");
    for (const char *line = rep; *line;) {
      const char *nl = strchr(line, '\n');
      size_t l = nl ? (size_t)(nl - line) : strlen(line);
      fprintf(stderr, "  unsupported: %.*s\n", (int)l, line);
      line += l + (nl != NULL);
    }
    free(rep);
    effml_context_free(ctx);
    return 1;
  }
  const char *type = effml_adapter_peft_type(a);
  int is_ia3 = strcmp(type, "IA3") == 0, has_alpha = !is_ia3 && strcmp(type, "VERA") != 0; /* no alpha in IA3, VeRA */
  int64_t n = effml_adapter_peft_num_modules(a), total = 0;
  /* LoRA/DoRA: use_rslora decides the scale the merge applies, alpha / r or alpha / sqrt(r) (Kalajdzievski,
   * "A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA", 2023, arXiv:2312.03732, sec. 3); open()
   * has checked that the field is a boolean when present */
  int is_lora = strncmp(type, "LORA", 4) == 0, rslora = 0;
  if (is_lora) {
    char cp[4096];
    snprintf(cp, sizeof cp, "%s/adapter_config.json", dir);
    cJSON *cfg = read_json_file(cp);
    rslora = cfg && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cfg, "use_rslora"));
    cJSON_Delete(cfg);
  }
  printf("type: %s\nfan_in_fan_out: %s\nmodules: %lld\n", type, effml_adapter_peft_fan_in_fan_out(a) ? "true" : "false",
         (long long)n);
  for (int64_t i = 0; i < n; ++i) {
    int64_t r = 0, np = 0;
    double alpha = 0;
    if (effml_adapter_peft_module_info(ctx, a, i, &r, &alpha, &np) != EFFML_OK) {
      int rc = fail_ctx(ctx, dir);
      effml_adapter_peft_free(a);
      effml_context_free(ctx);
      return rc;
    }
    printf("  %s  ", effml_adapter_peft_module_name(a, i));
    if (is_ia3) /* a learned vector, no rank: what it scales */
      printf("scales=%s", effml_adapter_peft_module_scales_input(a, i) ? "input (feedforward)" : "output");
    else
      printf("r=%lld", (long long)r);
    if (has_alpha) printf(" alpha=%g", alpha);
    if (is_lora && r > 0)
      printf(" rslora=%s scale=%.6g (alpha/%s)", rslora ? "true" : "false", rslora ? alpha / sqrt((double)r) : alpha / (double)r,
             rslora ? "sqrt(r)" : "r");
    printf(" params=%lld\n", (long long)np);
    total += np;
  }
  printf("parameters: %lld\n", (long long)total);
  int rc = print_dropouts(ctx, a, dir);
  effml_adapter_peft_free(a);
  effml_context_free(ctx);
  return rc;
}

static int32_t dtype_of(const char *s) {
  if (strcmp(s, "F32") == 0) return EFFML_F32;
  if (strcmp(s, "F16") == 0) return EFFML_F16;
  if (strcmp(s, "BF16") == 0) return EFFML_BF16;
  return 0;
}

/* Buffers reused from tensor to tensor (sized once for the largest merged tensor): fresh 64 MiB
 * allocations per tensor cost a page fault per 4 KiB page, more kernel time than the copy itself. */
typedef struct bufs {
  float *w, *b;      /* f32 weight and bias */
  void *wraw, *braw; /* their file-dtype bytes (F16/BF16) */
} bufs;

/* Read tensor e into f32 memory f (F32 files straight into it; F16/BF16 through raw, which then
 * keeps the file bytes for rounding back) and wrap it as *t.  0, or 1 with the reason on stderr. */
static int read_f32(effml_context *ctx, const entry *e, float *f, void *raw, effml_tensor **t) {
  size_t bytes = (size_t)(e->end - e->begin), n = 1;
  for (int d = 0; d < e->ndim; ++d) n *= (size_t)e->shape[d];
  *t = NULL;
  if (read_full(e->fd, e->dtype == EFFML_F32 ? (void *)f : raw, bytes, e->data0 + e->begin)) {
    fprintf(stderr, "effml-adapter: cannot read %s\n", e->name);
    return 1;
  }
  if (effml_tensor_wrap(ctx, EFFML_F32, e->ndim, e->shape, NULL, f, n * sizeof(float), 0, t) != EFFML_OK)
    return fail_ctx(ctx, e->name);
  if (e->dtype == EFFML_F32) return 0;
  effml_tensor *wt = NULL;
  int bad = effml_tensor_wrap(ctx, e->dtype, e->ndim, e->shape, NULL, raw, bytes, 1, &wt) != EFFML_OK ||
            effml_tensor_copy(ctx, *t, wt) != EFFML_OK;
  effml_tensor_free(wt);
  return bad ? fail_ctx(ctx, e->name) : 0;
}

/* The file-dtype bytes of f32 tensor t (entry e): t's own data for F32, else t rounded once into
 * raw. */
static const void *file_bytes(effml_context *ctx, const entry *e, effml_tensor *t, void *raw) {
  if (e->dtype == EFFML_F32) return effml_tensor_data_const(t);
  effml_tensor *wt = NULL;
  size_t bytes = (size_t)(e->end - e->begin);
  int bad = effml_tensor_wrap(ctx, e->dtype, e->ndim, e->shape, NULL, raw, bytes, 0, &wt) != EFFML_OK ||
            effml_tensor_copy(ctx, wt, t) != EFFML_OK;
  effml_tensor_free(wt);
  if (bad) {
    fail_ctx(ctx, e->name);
    return NULL;
  }
  return raw;
}

/* Merge module w->module into weight w (and bias b, or NULL when the adapter leaves the bias
 * alone): effml_adapter_peft_merge_tensors() on f32 copies in bu, rounded once back to the
 * file's dtypes; *wbytes and *bbytes point at the bytes to write (inside bu). */
static int merge_module(effml_context *ctx, const effml_adapter_peft *a, const entry *w, const entry *b,
                        const bufs *bu, const void **wbytes, const void **bbytes) {
  effml_tensor *wt = NULL, *bt = NULL;
  int rc = 1;
  *wbytes = *bbytes = NULL;
  if (read_f32(ctx, w, bu->w, bu->wraw, &wt) || (b && read_f32(ctx, b, bu->b, bu->braw, &bt)))
    goto done;
  if (effml_adapter_peft_merge_tensors(ctx, a, w->module, wt, bt) != EFFML_OK) {
    rc = fail_ctx(ctx, effml_adapter_peft_module_name(a, w->module));
    goto done;
  }
  *wbytes = file_bytes(ctx, w, wt, bu->wraw);
  if (b) *bbytes = file_bytes(ctx, b, bt, bu->braw);
  rc = (*wbytes == NULL || (b && *bbytes == NULL)) ? 1 : 0;
done:
  effml_tensor_free(wt);
  effml_tensor_free(bt);
  return rc;
}

/* One file of the base: the single checkpoint, or one shard of a sharded one. */
typedef struct shard {
  char *file;           /* the shard's name in weight_map (NULL for a single file) */
  char *in, *out, *tmp; /* its path, the output path, the temporary output path */
  int fd, made;         /* base file; made: tmp was created */
  unsigned char len8[8];
  uint64_t n;           /* header length */
  char *hdr;
  cJSON *root;
  entry *es; /* its tensors in data order */
  int ne;
} shard;

/* Open s->in and read its header into s->es (sorted by offset): 0, or 1 with the reason on stderr. */
static int open_shard(shard *s) {
  s->fd = open(s->in, O_RDONLY);
  if (s->fd < 0 || read_full(s->fd, s->len8, 8, 0)) {
    fprintf(stderr, "effml-adapter: cannot read %s: %s\n", s->in, strerror(errno));
    return 1;
  }
  for (int i = 7; i >= 0; --i) s->n = (s->n << 8) | s->len8[i];
  if (s->n > 100000000u || (s->hdr = (char *)malloc(s->n + 1)) == NULL || read_full(s->fd, s->hdr, s->n, 8)) {
    fprintf(stderr, "effml-adapter: %s: bad or unreadable safetensors header\n", s->in);
    return 1;
  }
  s->hdr[s->n] = '\0';
  s->root = cJSON_Parse(s->hdr);
  if (!cJSON_IsObject(s->root)) {
    fprintf(stderr, "effml-adapter: %s: header is not a JSON object\n", s->in);
    return 1;
  }
  int ne = 0;
  for (cJSON *v = s->root->child; v; v = v->next) ne += strcmp(v->string, "__metadata__") != 0;
  s->es = (entry *)calloc((size_t)(ne ? ne : 1), sizeof *s->es);
  if (s->es == NULL) return 1;
  for (cJSON *v = s->root->child; v; v = v->next) {
    if (strcmp(v->string, "__metadata__") == 0) continue;
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(v, "dtype"), *sh = cJSON_GetObjectItemCaseSensitive(v, "shape"),
                *of = cJSON_GetObjectItemCaseSensitive(v, "data_offsets");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || cJSON_GetArraySize(sh) > 8 || !cJSON_IsArray(of) ||
        cJSON_GetArraySize(of) != 2) {
      fprintf(stderr, "effml-adapter: %s: malformed entry \"%s\"\n", s->in, v->string);
      return 1;
    }
    entry *e = &s->es[s->ne++];
    e->name = v->string;
    e->dtype = dtype_of(dt->valuestring);
    e->ndim = cJSON_GetArraySize(sh);
    for (int d = 0; d < e->ndim; ++d) e->shape[d] = (int64_t)cJSON_GetArrayItem(sh, d)->valuedouble;
    e->begin = (uint64_t)cJSON_GetArrayItem(of, 0)->valuedouble;
    e->end = (uint64_t)cJSON_GetArrayItem(of, 1)->valuedouble;
    e->module = -1;
    e->fd = s->fd;
    e->data0 = 8 + s->n;
    if (e->end < e->begin) {
      fprintf(stderr, "effml-adapter: %s: bad offsets for \"%s\"\n", s->in, e->name);
      return 1;
    }
  }
  qsort(s->es, (size_t)s->ne, sizeof *s->es, cmp_entry);
  return 0;
}

/* a + b + c in a new string (NULL when out of memory). */
static char *cat3(const char *a, const char *b, const char *c) {
  size_t l = strlen(a) + strlen(b) + strlen(c) + 1;
  char *p = (char *)malloc(l);
  if (p) snprintf(p, l, "%s%s%s", a, b, c);
  return p;
}

/* path + ".tmp.<pid>": the temporary name an output is written under. */
static char *tmp_name(const char *path) {
  char suffix[32];
  snprintf(suffix, sizeof suffix, ".tmp.%ld", (long)getpid());
  return cat3(path, suffix, "");
}

/* The folder part of `path` ("." when it has none), in buf. */
static const char *dir_of(const char *path, char *buf, size_t len) {
  const char *sl = strrchr(path, '/');
  if (sl == NULL) snprintf(buf, len, ".");
  else if (sl == path) snprintf(buf, len, "/");
  else snprintf(buf, len, "%.*s", (int)(sl - path), path);
  return buf;
}

static int ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* A sharded checkpoint's index (Hugging Face's "model.safetensors.index.json": "metadata" with
 * "total_size" -- and "total_parameters" when recorded --, "weight_map" tensor -> shard file):
 * checked (any other field is an error naming it; shard names are plain file names beside the
 * index), and one shard per file in order of first mention, with its output path beside
 * out_path.  0, or 1 with the reason on stderr. */
static int read_index(const char *index_path, const char *out_path, cJSON **idx, shard **shards, int *nsh) {
  errno = 0;
  *idx = read_json_file(index_path);
  if (*idx == NULL || !cJSON_IsObject(*idx)) {
    fprintf(stderr, "effml-adapter: %s: cannot read it as a JSON object (%s)\n", index_path,
            *idx ? "not an object" : errno ? strerror(errno) : "bad JSON");
    return 1;
  }
  const cJSON *md = NULL, *wm = NULL;
  for (const cJSON *v = (*idx)->child; v; v = v->next) {
    const cJSON **slot = strcmp(v->string, "metadata") == 0 ? &md : strcmp(v->string, "weight_map") == 0 ? &wm : NULL;
    if (slot && *slot) {
      fprintf(stderr, "effml-adapter: %s: field \"%s\" appears twice\n", index_path, v->string);
      return 1;
    }
    if (slot) *slot = v;
    else {
      fprintf(stderr, "effml-adapter: %s: unknown field \"%s\" (a sharded checkpoint index holds \"metadata\" and "
                      "\"weight_map\"; this tool does not guess what other fields mean)\n", index_path, v->string);
      return 1;
    }
  }
  if (!cJSON_IsObject(wm) || wm->child == NULL || (md && !cJSON_IsObject(md))) {
    fprintf(stderr, "effml-adapter: %s: %s\n", index_path,
            !cJSON_IsObject(wm) ? "no \"weight_map\" object" : wm->child == NULL ? "\"weight_map\" is empty"
                                                                               : "\"metadata\" is not an object");
    return 1;
  }
  for (const cJSON *v = md ? md->child : NULL; v; v = v->next) {
    if (strcmp(v->string, "total_size") != 0 && strcmp(v->string, "total_parameters") != 0) {
      fprintf(stderr, "effml-adapter: %s: unknown metadata field \"%s\" (this tool reads and rewrites the numbers "
                      "\"total_size\" and \"total_parameters\")\n", index_path, v->string);
      return 1;
    }
    /* a count of bytes or elements: a JSON number, a whole one, >= 0 (a wrong count is recomputed) */
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble < 9.0e18) ||
        (double)(long long)v->valuedouble != v->valuedouble) {
      char *txt = cJSON_PrintUnformatted(v);
      fprintf(stderr, "effml-adapter: %s: metadata field \"%s\" is %s, %s\n", index_path, v->string,
              txt ? txt : "?",
              cJSON_IsNumber(v) ? "not a non-negative integer (a count of bytes or elements)" : "not a number");
      cJSON_free(txt);
      return 1;
    }
  }
  int cap = 0;
  for (const cJSON *v = wm->child; v; v = v->next) ++cap;
  *shards = (shard *)calloc((size_t)cap, sizeof **shards);
  if (*shards == NULL) return 1;
  char din[4096], dout[4096];
  dir_of(index_path, din, sizeof din);
  dir_of(out_path, dout, sizeof dout);
  for (const cJSON *v = wm->child; v; v = v->next) {
    if (!cJSON_IsString(v) || v->valuestring[0] == '\0' || strchr(v->valuestring, '/') ||
        strcmp(v->valuestring, ".") == 0 || strcmp(v->valuestring, "..") == 0) {
      char *t = cJSON_PrintUnformatted(v);
      fprintf(stderr, "effml-adapter: %s: weight_map[\"%s\"]=%s is not a shard file name beside the index\n",
              index_path, v->string, t ? t : "?");
      cJSON_free(t);
      return 1;
    }
    int k = 0;
    while (k < *nsh && strcmp((*shards)[k].file, v->valuestring) != 0) ++k;
    if (k < *nsh) continue;
    shard *s = &(*shards)[(*nsh)++];
    s->fd = -1;
    s->file = v->valuestring;
    s->in = cat3(din, "/", s->file);
    s->out = cat3(dout, "/", s->file);
    s->tmp = s->out ? tmp_name(s->out) : NULL;
    if (s->in == NULL || s->out == NULL || s->tmp == NULL) return 1;
    if (access(s->in, R_OK) != 0) {
      fprintf(stderr, "effml-adapter: %s: weight_map names shard \"%s\" (for tensor \"%s\"), but %s cannot be read: "
                      "%s\n", index_path, s->file, v->string, s->in, strerror(errno));
      return 1;
    }
  }
  return 0;
}

/* Every weight_map entry names a tensor its shard holds, and every tensor of a shard is listed
 * there with that shard: 0, or 1 naming the first that is not. */
static int check_weight_map(const char *index_path, const cJSON *idx, const shard *sh, int nsh) {
  const cJSON *wm = cJSON_GetObjectItemCaseSensitive(idx, "weight_map");
  for (const cJSON *v = wm->child; v; v = v->next)
    if (cJSON_GetObjectItemCaseSensitive(wm, v->string) != v) {
      fprintf(stderr, "effml-adapter: %s: weight_map lists tensor \"%s\" twice\n", index_path, v->string);
      return 1;
    }
  for (const cJSON *v = wm->child; v; v = v->next) {
    int k = 0, found = 0;
    while (strcmp(sh[k].file, v->valuestring) != 0) ++k;
    for (int i = 0; i < sh[k].ne && !found; ++i) found = strcmp(sh[k].es[i].name, v->string) == 0;
    if (!found) {
      fprintf(stderr, "effml-adapter: %s: weight_map names tensor \"%s\" in shard \"%s\", but %s has no such tensor\n",
              index_path, v->string, sh[k].file, sh[k].in);
      return 1;
    }
  }
  for (int k = 0; k < nsh; ++k)
    for (int i = 0; i < sh[k].ne; ++i) {
      const cJSON *v = cJSON_GetObjectItemCaseSensitive(wm, sh[k].es[i].name);
      if (!cJSON_IsString(v) || strcmp(v->valuestring, sh[k].file) != 0) {
        fprintf(stderr, "effml-adapter: %s: shard \"%s\" holds tensor \"%s\", which weight_map %s%s%s\n", index_path,
                sh[k].file, sh[k].es[i].name, v ? "maps to shard \"" : "does not list",
                v ? v->valuestring : "", v ? "\"" : "");
        return 1;
      }
    }
  return 0;
}

/* Write the output index to `path` (created): the input's metadata keys with total_size (bytes
 * of tensor data over all shards) and total_parameters (elements) recomputed from the shards'
 * headers, and the weight_map as given, 2-space indented.  0, or 1 with errno set. */
static int write_index(const char *path, const cJSON *idx, const shard *sh, int nsh) {
  unsigned long long bytes = 0, params = 0;
  for (int k = 0; k < nsh; ++k)
    for (int i = 0; i < sh[k].ne; ++i) {
      unsigned long long n = 1;
      for (int d = 0; d < sh[k].es[i].ndim; ++d) n *= (unsigned long long)sh[k].es[i].shape[d];
      bytes += sh[k].es[i].end - sh[k].es[i].begin;
      params += n;
    }
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
  if (f == NULL) {
    if (fd >= 0) close(fd);
    return 1;
  }
  const cJSON *md = cJSON_GetObjectItemCaseSensitive(idx, "metadata"),
              *wm = cJSON_GetObjectItemCaseSensitive(idx, "weight_map");
  fputs("{\n", f);
  if (md) {
    fputs("  \"metadata\": {", f);
    for (const cJSON *v = md->child; v; v = v->next)
      fprintf(f, "%s\n    \"%s\": %llu", v == md->child ? "" : ",", v->string,
              strcmp(v->string, "total_size") == 0 ? bytes : params);
    fputs(md->child ? "\n  },\n" : "},\n", f);
  }
  fputs("  \"weight_map\": {", f);
  for (const cJSON *v = wm->child; v; v = v->next) {
    cJSON *key = cJSON_CreateString(v->string);
    char *k = key ? cJSON_PrintUnformatted(key) : NULL, *val = cJSON_PrintUnformatted(v);
    fprintf(f, "%s\n    %s: %s", v == wm->child ? "" : ",", k ? k : "\"?\"", val ? val : "\"?\"");
    cJSON_free(k);
    cJSON_free(val);
    cJSON_Delete(key);
  }
  fputs("\n  }\n}\n", f);
  int bad = fflush(f) != 0 || fsync(fd) != 0;
  return (fclose(f) != 0 || bad) ? 1 : 0;
}

/* Stream shard s into its temporary file: the header verbatim, each tensor copied or (a module's
 * weight, and its bias when the adapter changes it) merged.  *k and *done0 count tensors and data
 * bytes over all shards (progress).  0, or 1 with the reason on stderr (nothing on a signal). */
static int write_shard(effml_context *ctx, const effml_adapter_peft *a, shard *s, entry *const *all, int nall,
                       outw *w, const bufs *bu, int64_t *cached, const void **cwb, const void **cbb, progress *pg,
                       int *k, uint64_t *done0) {
  w->fd = open(s->tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  s->made = w->fd >= 0;
  w->len = 0;
  w->off = w->dropped = 0;
  if (w->fd < 0 || write_full(w, s->len8, 8) || write_full(w, s->hdr, s->n)) {
    fprintf(stderr, "effml-adapter: cannot write %s: %s\n", s->tmp, strerror(errno));
    return 1;
  }
  int bias_changes = effml_adapter_peft_changes_bias(a) || strcmp(effml_adapter_peft_type(a), "IA3") == 0;
  uint64_t pos = 0;
  for (int i = 0; i < s->ne; ++i) {
    entry *e = &s->es[i];
    if (g_signal) return 1;
    if (e->begin != pos) {
      fprintf(stderr, "effml-adapter: %s: tensors are not contiguous at \"%s\"\n", s->in, e->name);
      return 1;
    }
    size_t bytes = (size_t)(e->end - e->begin);
    /* a bias the adapter does not change is copied like any other tensor (last branch) */
    const char *what = e->module >= 0 && (bias_changes || !e->is_bias) ? "merging" : "copying";
    progress_show(pg, ++*k, *done0 + e->begin, what, e->name);
    if (e->module >= 0 && (!e->is_bias || bias_changes)) {
      /* a module's weight and (when the adapter changes it: lora_bias, IA3) bias come from one
       * merge, made when the first of the pair is reached: the other stays in the buffers when it
       * is the next tensor of this shard ("X.bias" before "X.weight", as safetensors writers sort
       * them), or else is kept in its own stash until its turn (a bias in another shard, or other
       * tensors between the pair), so each module is merged exactly once */
      const void *src = e->stash;
      if (src == NULL && *cached != e->module) {
        entry *wt = NULL, *bt = NULL;
        for (int j = 0; j < nall; ++j)
          if (all[j]->module == e->module) {
            if (all[j]->is_bias) bt = all[j];
            else wt = all[j];
          }
        if (!bias_changes) bt = NULL;
        if (pg->mode == 0) fprintf(stderr, "effml-adapter: merging %s\n", effml_adapter_peft_module_name(a, e->module));
        *cached = -1;
        if (merge_module(ctx, a, wt, bt, bu, cwb, cbb)) return 1;
        *cached = e->module;
        entry *later = e == wt ? bt : wt; /* the other of the pair, written after this one */
        if (later && !(i + 1 < s->ne && &s->es[i + 1] == later)) {
          size_t lb = (size_t)(later->end - later->begin);
          later->stash = malloc(lb ? lb : 1);
          if (later->stash == NULL) {
            fprintf(stderr, "effml-adapter: out of memory keeping the merged %s (%zu bytes) until it is written\n",
                    later->name, lb);
            return 1;
          }
          memcpy(later->stash, later == bt ? *cbb : *cwb, lb);
        }
      }
      if (src == NULL) src = e->is_bias ? *cbb : *cwb;
      int bad = write_full(w, src, bytes);
      free(e->stash);
      e->stash = NULL;
      if (bad) {
        fprintf(stderr, "effml-adapter: write failed: %s\n", strerror(errno));
        return 1;
      }
    } else if (copy_range(w, e->fd, e->data0 + e->begin, bytes)) {
      if (!g_signal) fprintf(stderr, "effml-adapter: copying %s failed: %s\n", e->name, strerror(errno));
      return 1;
    }
    pos = e->end;
  }
  *done0 += pos;
  int bad = ow_flush(w) != 0 || fsync(w->fd) != 0;
  bad = close(w->fd) != 0 || bad;
  w->fd = -1;
  if (bad) {
    fprintf(stderr, "effml-adapter: cannot write %s: %s\n", s->tmp, strerror(errno));
    return 1;
  }
  return 0;
}

/* --base INDEX.json with --out OUT: OUT must be an index too, and its folder must not be the
 * base's unless OUT is the base index itself (the shards keep their names, so they would replace
 * the base's own).  0, or 1 with the reason on stderr. */
static int check_sharded_out(const char *base_path, const char *out_path) {
  if (!ends_with(out_path, ".index.json")) {
    fprintf(stderr, "effml-adapter: --base %s is a sharded checkpoint index, so --out must name the output index "
                    "(\"DIR/model.safetensors.index.json\"; the shards are written beside it with their names), not "
                    "%s\n", base_path, out_path);
    return 1;
  }
  char a[4096], b[4096];
  struct stat sa, sb, fa, fb;
  if (stat(dir_of(out_path, b, sizeof b), &sb) != 0 || !S_ISDIR(sb.st_mode)) {
    fprintf(stderr, "effml-adapter: --out %s: its folder %s does not exist\n", out_path, b);
    return 1;
  }
  if (stat(dir_of(base_path, a, sizeof a), &sa) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino &&
      !(stat(base_path, &fa) == 0 && stat(out_path, &fb) == 0 && fa.st_dev == fb.st_dev && fa.st_ino == fb.st_ino)) {
    fprintf(stderr, "effml-adapter: --out %s is in the base's folder but is not the base index: the merged shards, "
                    "which keep their names, would replace the base's shards; write to another folder, or give "
                    "--out %s to merge in place\n", out_path, base_path);
    return 1;
  }
  return 0;
}

static int merge(const char *base_path, const char *dir, const char *out_path, int dry_run, int progress_mode) {
  const int sharded = ends_with(base_path, ".index.json");
  if (sharded && !dry_run && check_sharded_out(base_path, out_path)) return 1;
  if (!sharded && !dry_run && ends_with(out_path, ".index.json")) {
    fprintf(stderr, "effml-adapter: --base %s is a single safetensors file, so --out must name the merged "
                    "safetensors file (\"DIR/model.safetensors\"), not an index: %s\n", base_path, out_path);
    return 1;
  }
  effml_context *ctx = NULL;
  if (effml_context_create(NULL, &ctx) != EFFML_OK) return 1;
  g_signal = 0;
  g_ctx = ctx;
  catch_signals(1);
  progress pg = {progress_mode, 0, 0, 0};
  effml_adapter_peft *a = NULL;
  int rc = 1, nsh = 0, nall = 0, committing = 0;
  cJSON *idx = NULL;
  shard *sh = NULL;
  entry **all = NULL;
  char *idx_tmp = NULL;
  outw ow = {-1, NULL, 1u << 24, 0, 0, 0, 0};
  void *buf = NULL;
  bufs bu = {NULL, NULL, NULL, NULL};
  const void *cwb = NULL, *cbb = NULL;
  const size_t chunk = 1u << 24; /* a multiple of the page size */
  if (effml_adapter_peft_open(ctx, dir, &a) != EFFML_OK) {
    if (!g_signal) rc = fail_ctx(ctx, dir);
    goto done;
  }
  if (sharded) {
    if (read_index(base_path, out_path, &idx, &sh, &nsh)) goto done;
  } else {
    sh = (shard *)calloc(1, sizeof *sh);
    if (sh == NULL) goto done;
    nsh = 1;
    sh->fd = -1;
    sh->in = cat3(base_path, "", "");
    sh->out = cat3(out_path, "", "");
    sh->tmp = tmp_name(out_path);
    if (sh->in == NULL || sh->out == NULL || sh->tmp == NULL) goto done;
  }
  for (int k = 0; k < nsh; ++k) {
    if (open_shard(&sh[k])) goto done;
    nall += sh[k].ne;
  }
  if (sharded && check_weight_map(base_path, idx, sh, nsh)) goto done;
  all = (entry **)calloc((size_t)(nall ? nall : 1), sizeof *all);
  if (all == NULL) goto done;
  nall = 0;
  for (int k = 0; k < nsh; ++k)
    for (int i = 0; i < sh[k].ne; ++i) all[nall++] = &sh[k].es[i];
  /* plan: every module's weight (and bias) in the base, mergeable dtypes */
  int64_t nm = effml_adapter_peft_num_modules(a);
  for (int64_t m = 0; m < nm; ++m) {
    const char *mod = effml_adapter_peft_module_name(a, m), *x = mod;
    if (strncmp(x, "base_model.model.", 17) == 0) x += 17;
    size_t xl = strlen(x);
    entry *w = NULL, *b = NULL;
    for (int i = 0; i < nall; ++i)
      if (strncmp(all[i]->name, x, xl) == 0) {
        if (strcmp(all[i]->name + xl, ".weight") == 0) w = all[i];
        if (strcmp(all[i]->name + xl, ".bias") == 0) b = all[i];
      }
    if (w == NULL) {
      fprintf(stderr, "effml-adapter: module %s: the base has no tensor \"%s.weight\"\n", mod, x);
      goto done;
    }
    if (w->ndim != 2 || w->dtype == 0 || (b && (b->ndim != 1 || b->dtype == 0))) {
      fprintf(stderr, "effml-adapter: module %s: \"%s\" must be a 2-D F32/F16/BF16 tensor (with a 1-D bias) to merge\n",
              mod, w->name);
      goto done;
    }
    if (b) { /* the bias has out_features entries: a fan_in_fan_out that does not fit the base shows here */
      int fan = effml_adapter_peft_fan_in_fan_out(a);
      int64_t out_f = fan ? w->shape[1] : w->shape[0];
      if (b->shape[0] != out_f) {
        fprintf(stderr,
                "effml-adapter: module %s: fan_in_fan_out=%s reads \"%s\" [%lld, %lld] as [%s], so out_features=%lld, "
                "but \"%s\" has shape [%lld]; fan_in_fan_out in adapter_config.json does not match this base "
                "(true for Conv1D weights stored [in, out], false for Linear weights stored [out, in])\n",
                mod, fan ? "true" : "false", w->name, (long long)w->shape[0], (long long)w->shape[1],
                fan ? "in, out" : "out, in", (long long)out_f, b->name, (long long)b->shape[0]);
        goto done;
      }
    }
    if (effml_adapter_peft_changes_bias(a) && b == NULL) {
      fprintf(stderr, "effml-adapter: module %s: lora_bias cannot be merged: the base has no \"%s.bias\"\n", mod, x);
      goto done;
    }
    w->module = m;
    if (b) b->module = m, b->is_bias = 1;
    if (dry_run)
      printf("merge %s -> %s [%lld, %lld]%s\n", mod, w->name, (long long)w->shape[0], (long long)w->shape[1],
             effml_adapter_peft_changes_bias(a) ? " and its bias" : "");
  }
  if (dry_run) {
    printf("%d other tensors copied unchanged", nall - (int)nm);
    if (sharded) printf(" (%d shards)", nsh);
    printf("\n");
    rc = 0;
    goto done;
  }
  { /* the reused buffers: the largest merged weight and bias, f32 and file bytes; the copy chunk */
    size_t wn = 1, bn = 1, wr = 1, br = 1;
    for (int i = 0; i < nall; ++i) {
      const entry *e = all[i];
      if (e->module < 0) continue;
      size_t n = 1, bytes = (size_t)(e->end - e->begin);
      for (int d = 0; d < e->ndim; ++d) n *= (size_t)e->shape[d];
      size_t *fn = e->is_bias ? &bn : &wn, *rn = e->is_bias ? &br : &wr;
      if (n > *fn) *fn = n;
      if (e->dtype != EFFML_F32 && bytes > *rn) *rn = bytes;
    }
    bu.w = (float *)malloc(wn * sizeof(float));
    bu.b = (float *)malloc(bn * sizeof(float));
    bu.wraw = malloc(wr);
    bu.braw = malloc(br);
    buf = malloc(chunk); /* the staging buffer of the output */
    ow.buf = (char *)buf;
    if (bu.w == NULL || bu.b == NULL || bu.wraw == NULL || bu.braw == NULL || buf == NULL) {
      fprintf(stderr, "effml-adapter: out of memory (buffers for a %zu-element tensor)\n", wn);
      goto done;
    }
  }
  pg.n = nall;
  for (int k = 0; k < nsh; ++k) pg.total += sh[k].ne ? sh[k].es[sh[k].ne - 1].end : 0;
  int kk = 0;
  int64_t cached = -1;
  uint64_t done0 = 0;
  for (int k = 0; k < nsh; ++k)
    if (write_shard(ctx, a, &sh[k], all, nall, &ow, &bu, &cached, &cwb, &cbb, &pg, &kk, &done0)) goto done;
  if (sharded) {
    idx_tmp = tmp_name(out_path);
    if (idx_tmp == NULL || write_index(idx_tmp, idx, sh, nsh)) {
      fprintf(stderr, "effml-adapter: cannot write %s: %s\n", idx_tmp ? idx_tmp : out_path, strerror(errno));
      goto done;
    }
  }
  progress_show(&pg, nall, pg.total, "done", "");
  progress_break(&pg);
  if (g_signal) goto done; /* the last chance to stop before the renames */
  /* Commit: every file is written and fsynced; the renames (shards, then the index) take
   * microseconds and are not interrupted: a signal from here on is ignored. */
  committing = 1;
  for (int k = 0; k < nsh; ++k) {
    if (rename(sh[k].tmp, sh[k].out) != 0) {
      fprintf(stderr, "effml-adapter: cannot rename %s to %s: %s%s\n", sh[k].tmp, sh[k].out, strerror(errno),
              k ? " (the shards before it are already replaced)" : "");
      goto done;
    }
    sh[k].made = 0;
  }
  if (idx_tmp && rename(idx_tmp, out_path) != 0) {
    fprintf(stderr, "effml-adapter: cannot rename %s to %s: %s (the shards are already replaced)\n", idx_tmp,
            out_path, strerror(errno));
    goto done;
  }
  if (sharded)
    fprintf(stderr, "effml-adapter: wrote %s and its %d shards (%lld modules merged)\n", out_path, nsh, (long long)nm);
  else
    fprintf(stderr, "effml-adapter: wrote %s (%lld modules merged)\n", out_path, (long long)nm);
  rc = 0;
done:
  progress_break(&pg);
  if (ow.fd >= 0) close(ow.fd);
  for (int k = 0; k < nsh; ++k)
    if (rc != 0 && sh[k].made) unlink(sh[k].tmp);
  if (rc != 0 && idx_tmp) unlink(idx_tmp);
  if (rc != 0 && g_signal && !committing) { /* whatever failed on the way, it was the interruption */
    fprintf(stderr, "effml-adapter: interrupted by %s: nothing written%s%s%s\n",
            g_signal == SIGINT ? "SIGINT" : "SIGTERM", dry_run ? "" : " (", dry_run ? "" : out_path,
            dry_run ? "" : (sharded ? " and its shards are as they were; the temporary files are removed)"
                                    : " is as it was; the temporary file is removed)"));
    rc = 128 + g_signal;
  }
  catch_signals(0);
  g_ctx = NULL;
  free(buf);
  free(bu.w);
  free(bu.b);
  free(bu.wraw);
  free(bu.braw);
  free(idx_tmp);
  free(all);
  for (int k = 0; k < nsh; ++k) {
    free(sh[k].in);
    free(sh[k].out);
    free(sh[k].tmp);
    for (int i = 0; i < sh[k].ne; ++i) free(sh[k].es[i].stash);
    free(sh[k].es);
    cJSON_Delete(sh[k].root);
    free(sh[k].hdr);
    if (sh[k].fd >= 0) close(sh[k].fd);
  }
  free(sh);
  cJSON_Delete(idx);
  effml_adapter_peft_free(a);
  effml_context_free(ctx);
  return rc;
}

static int is_help(const char *s) { return strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0; }

int main(int argc, char **argv) {
  for (int i = 1; i < argc; ++i)
    if (is_help(argv[i])) return help();
  if (argc == 3 && strcmp(argv[1], "info") == 0) return info(argv[2]);
  if (argc >= 2 && strcmp(argv[1], "merge") == 0) {
    const char *base = NULL, *dir = NULL, *out = NULL;
    int dry = 0, prog = isatty(STDERR_FILENO) ? 1 : 0;
    for (int i = 2; i < argc; ++i) {
      if (strcmp(argv[i], "--dry-run") == 0) dry = 1;
      else if (strcmp(argv[i], "--progress") == 0) prog = isatty(STDERR_FILENO) ? 1 : 2;
      else if (strcmp(argv[i], "--no-progress") == 0) prog = 0;
      else if (i + 1 < argc && strcmp(argv[i], "--base") == 0) base = argv[++i];
      else if (i + 1 < argc && strcmp(argv[i], "--adapter") == 0) dir = argv[++i];
      else if (i + 1 < argc && strcmp(argv[i], "--out") == 0) out = argv[++i];
      else return usage();
    }
    if (base == NULL || dir == NULL || (out == NULL && !dry)) return usage();
    return merge(base, dir, out ? out : "", dry, prog);
  }
  return usage();
}
