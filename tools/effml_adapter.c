/* effml-adapter: merge a PEFT adapter into a safetensors model, or describe one,
 * without Python or torch.
 *
 *   effml-adapter merge --base MODEL.safetensors --adapter DIR --out MERGED.safetensors [--dry-run]
 *                       [--progress | --no-progress]
 *   effml-adapter info DIR
 *   effml-adapter --help
 *
 * merge streams the base file tensor by tensor (pread/write, never the whole model
 * in memory): the header (names, dtypes, shapes, offsets, __metadata__) is copied
 * verbatim, every tensor the adapter does not touch is copied byte for byte (any
 * dtype, F8 included), and each adapted module's "X.weight" (module
 * "base_model.model.X") and "X.bias" are converted to f32,
 * merged by the library's own merge (LoRA, rsLoRA, DoRA, lora_bias, patterns,
 * fan_in_fan_out, LoKr) and rounded once back to its dtype (F32, F16, BF16).
 * Everything is checked before the first byte is written; the output is written
 * under a temporary name and renamed, so it is never left half-written.
 * Progress: one line per tensor on stderr ("[k/N] p% merging|copying NAME"), redrawn in
 * place when stderr is a terminal (the default there), one line each with --progress
 * when it is not; --no-progress turns it off.
 * Ctrl-C (SIGINT) or SIGTERM stops the merge at the next tensor or 16 MiB piece (and
 * the adapter load, through the context's cancel flag): the temporary file is removed,
 * --out keeps what it held before, and the exit status is 128 + the signal number.
 * Exit status: 0 ok (--help: usage on stdout), 1 refused or failed (message on stderr),
 * 2 usage error (unknown option, missing argument), 130 / 143 interrupted (SIGINT / SIGTERM). */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
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
} entry;

static const char USAGE[] =
    "usage: effml-adapter merge --base MODEL.safetensors --adapter DIR --out MERGED.safetensors [--dry-run]\n"
    "                           [--progress | --no-progress]\n"
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

static int write_full(FILE *f, const void *buf, size_t n) { return fwrite(buf, 1, n, f) == n ? 0 : -1; }

static int cmp_entry(const void *a, const void *b) {
  const entry *x = (const entry *)a, *y = (const entry *)b;
  return (x->begin > y->begin) - (x->begin < y->begin);
}

/* Describe the adapter in `dir` after the same checks merge makes when it opens it (config keys,
 * tensor names, every module's required tensors, finite values): 0, or 1 with the reason on stderr. */
static int info(const char *dir) {
  effml_context *ctx = NULL;
  if (effml_context_create(NULL, &ctx) != EFFML_OK) return 1;
  effml_adapter_peft *a = NULL;
  if (effml_adapter_peft_open(ctx, dir, &a) != EFFML_OK) {
    int rc = fail_ctx(ctx, dir);
    effml_context_free(ctx);
    return rc;
  }
  const char *type = effml_adapter_peft_type(a);
  int has_alpha = strcmp(type, "IA3") != 0 && strcmp(type, "VERA") != 0; /* IA3 and VeRA have no alpha */
  int64_t n = effml_adapter_peft_num_modules(a), total = 0;
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
    printf("  %s  r=%lld", effml_adapter_peft_module_name(a, i), (long long)r);
    if (has_alpha) printf(" alpha=%g", alpha);
    printf(" params=%lld\n", (long long)np);
    total += np;
  }
  printf("parameters: %lld\n", (long long)total);
  effml_adapter_peft_free(a);
  effml_context_free(ctx);
  return 0;
}

static int32_t dtype_of(const char *s) {
  if (strcmp(s, "F32") == 0) return EFFML_F32;
  if (strcmp(s, "F16") == 0) return EFFML_F16;
  if (strcmp(s, "BF16") == 0) return EFFML_BF16;
  return 0;
}

/* Merge module w->module (weight w, bias b or NULL): on success *wout / *bout hold the merged
 * bytes of the weight and the bias in the file's dtypes (rounded once; the caller frees them).
 * Memory: the tensor's bytes plus one f32 copy (and DoRA's 64-row block). */
static int merge_module(effml_context *ctx, const effml_adapter_peft *a, int fd, uint64_t data0, const entry *w,
                        const entry *b, void **wout, void **bout) {
  int rc = 1, fan = effml_adapter_peft_fan_in_fan_out(a);
  size_t wbytes = (size_t)(w->end - w->begin), bbytes = b ? (size_t)(b->end - b->begin) : 0;
  void *wraw = malloc(wbytes ? wbytes : 1), *braw = b ? malloc(bbytes ? bbytes : 1) : NULL;
  effml_tensor *wt = NULL, *bt = NULL;
  effml_layer *base = NULL, *l = NULL;
  int64_t in = fan ? w->shape[0] : w->shape[1], out = fan ? w->shape[1] : w->shape[0];
  if (wraw == NULL || (b && braw == NULL)) {
    fprintf(stderr, "effml-adapter: out of memory merging %s\n", w->name);
    goto done;
  }
  if (read_full(fd, wraw, wbytes, data0 + w->begin) || (b && read_full(fd, braw, bbytes, data0 + b->begin))) {
    fprintf(stderr, "effml-adapter: cannot read %s\n", w->name);
    goto done;
  }
  if (effml_tensor_wrap(ctx, w->dtype, 2, w->shape, NULL, wraw, wbytes, 0, &wt) != EFFML_OK ||
      (b && effml_tensor_wrap(ctx, b->dtype, 1, b->shape, NULL, braw, bbytes, 0, &bt) != EFFML_OK)) {
    rc = fail_ctx(ctx, w->name);
    goto done;
  }
  effml_status s = fan ? effml_adapter_conv1d_create(ctx, in, out, b != NULL, &base)
                       : effml_layer_dense_create(ctx, in, out, b != NULL, &base);
  if (s != EFFML_OK) {
    rc = fail_ctx(ctx, w->name);
    goto done;
  }
  int32_t iw = -1, ib = -1;
  for (int32_t j = 0; j < effml_layer_num_params(base); ++j) {
    if (strcmp(effml_layer_param_name(base, j), "weight") == 0) iw = j;
    if (strcmp(effml_layer_param_name(base, j), "bias") == 0) ib = j;
  }
  if (effml_tensor_copy(ctx, effml_layer_param(base, iw), wt) != EFFML_OK ||
      (b && effml_tensor_copy(ctx, effml_layer_param(base, ib), bt) != EFFML_OK)) {
    rc = fail_ctx(ctx, w->name);
    goto done;
  }
  if (effml_adapter_peft_attach(ctx, a, w->module, base, &l) != EFFML_OK) {
    rc = fail_ctx(ctx, effml_adapter_peft_module_name(a, w->module));
    goto done;
  }
  base = NULL; /* owned by l */
  if (effml_adapter_peft_merge_layer(ctx, l) != EFFML_OK) {
    rc = fail_ctx(ctx, effml_adapter_peft_module_name(a, w->module));
    goto done;
  }
  effml_layer *bl = effml_adapter_lora_base(l);
  if (effml_tensor_copy(ctx, wt, effml_layer_param(bl, iw)) != EFFML_OK ||
      (b && effml_tensor_copy(ctx, bt, effml_layer_param(bl, ib)) != EFFML_OK)) {
    rc = fail_ctx(ctx, w->name);
    goto done;
  }
  *wout = wraw;
  *bout = braw;
  wraw = braw = NULL;
  rc = 0;
done:
  effml_layer_free(l);
  effml_layer_free(base);
  effml_tensor_free(wt);
  effml_tensor_free(bt);
  free(wraw);
  free(braw);
  return rc;
}

/* Merge module w->module when its bias does not change (all but lora_bias and IA3): the weight is
 * read straight into the base layer's f32 weight (F32 files: no second copy), merged, and written
 * to f from there (or converted into the read buffer for F16/BF16).  Memory: one f32 copy of the
 * tensor (plus the file-dtype bytes for F16/BF16). */
static int merge_weight_direct(effml_context *ctx, const effml_adapter_peft *a, int fd, uint64_t data0,
                               const entry *w, FILE *f) {
  int rc = 1, fan = effml_adapter_peft_fan_in_fan_out(a);
  size_t wbytes = (size_t)(w->end - w->begin);
  int64_t in = fan ? w->shape[0] : w->shape[1], out = fan ? w->shape[1] : w->shape[0];
  effml_layer *base = NULL, *l = NULL;
  effml_tensor *wt = NULL;
  void *raw = NULL;
  effml_status s = fan ? effml_adapter_conv1d_create(ctx, in, out, 0, &base)
                       : effml_layer_dense_create(ctx, in, out, 0, &base);
  if (s != EFFML_OK) return fail_ctx(ctx, w->name);
  effml_tensor *W = effml_layer_param(base, 0); /* "weight", stored as the file stores it */
  if (w->dtype == EFFML_F32) {
    if (read_full(fd, effml_tensor_data(W), wbytes, data0 + w->begin)) {
      fprintf(stderr, "effml-adapter: cannot read %s\n", w->name);
      goto done;
    }
  } else {
    raw = malloc(wbytes ? wbytes : 1);
    if (raw == NULL || read_full(fd, raw, wbytes, data0 + w->begin) ||
        effml_tensor_wrap(ctx, w->dtype, 2, w->shape, NULL, raw, wbytes, 0, &wt) != EFFML_OK ||
        effml_tensor_copy(ctx, W, wt) != EFFML_OK) {
      fprintf(stderr, "effml-adapter: cannot read %s: %s\n", w->name, effml_context_last_error(ctx));
      goto done;
    }
  }
  if (effml_adapter_peft_attach(ctx, a, w->module, base, &l) != EFFML_OK) {
    rc = fail_ctx(ctx, effml_adapter_peft_module_name(a, w->module));
    goto done;
  }
  base = NULL; /* owned by l */
  if (effml_adapter_peft_merge_layer(ctx, l) != EFFML_OK) {
    rc = fail_ctx(ctx, effml_adapter_peft_module_name(a, w->module));
    goto done;
  }
  if (w->dtype != EFFML_F32 && effml_tensor_copy(ctx, wt, W) != EFFML_OK) { /* round once */
    rc = fail_ctx(ctx, w->name);
    goto done;
  }
  if (write_full(f, w->dtype == EFFML_F32 ? effml_tensor_data_const(W) : raw, wbytes)) {
    fprintf(stderr, "effml-adapter: write failed: %s\n", strerror(errno));
    goto done;
  }
  rc = 0;
done:
  effml_layer_free(l);
  effml_layer_free(base);
  effml_tensor_free(wt);
  free(raw);
  return rc;
}

static int merge(const char *base_path, const char *dir, const char *out_path, int dry_run, int progress_mode) {
  size_t bl = strlen(base_path);
  if (bl > 11 && strcmp(base_path + bl - 11, ".index.json") == 0) {
    fprintf(stderr, "effml-adapter: %s is a sharded checkpoint index; sharded checkpoints are not merged yet "
                    "(merge a single-file checkpoint)\n", base_path);
    return 1;
  }
  effml_context *ctx = NULL;
  if (effml_context_create(NULL, &ctx) != EFFML_OK) return 1;
  g_signal = 0;
  g_ctx = ctx;
  catch_signals(1);
  progress pg = {progress_mode, 0, 0, 0};
  effml_adapter_peft *a = NULL;
  int rc = 1, fd = -1;
  char *hdr = NULL, *tmp = NULL;
  cJSON *root = NULL;
  entry *es = NULL;
  FILE *f = NULL;
  void *buf = NULL, *cw = NULL, *cb = NULL;
  if (effml_adapter_peft_open(ctx, dir, &a) != EFFML_OK) {
    if (!g_signal) rc = fail_ctx(ctx, dir);
    goto done;
  }
  fd = open(base_path, O_RDONLY);
  uint64_t n = 0;
  unsigned char len8[8];
  if (fd < 0 || read_full(fd, len8, 8, 0)) {
    fprintf(stderr, "effml-adapter: cannot read %s: %s\n", base_path, strerror(errno));
    goto done;
  }
  for (int i = 7; i >= 0; --i) n = (n << 8) | len8[i];
  if (n > 100000000u || (hdr = (char *)malloc(n + 1)) == NULL || read_full(fd, hdr, n, 8)) {
    fprintf(stderr, "effml-adapter: %s: bad or unreadable safetensors header\n", base_path);
    goto done;
  }
  hdr[n] = '\0';
  root = cJSON_Parse(hdr);
  if (!cJSON_IsObject(root)) {
    fprintf(stderr, "effml-adapter: %s: header is not a JSON object\n", base_path);
    goto done;
  }
  int ne = 0;
  for (cJSON *v = root->child; v; v = v->next) ne += strcmp(v->string, "__metadata__") != 0;
  es = (entry *)calloc((size_t)(ne ? ne : 1), sizeof *es);
  if (es == NULL) goto done;
  int k = 0;
  for (cJSON *v = root->child; v; v = v->next) {
    if (strcmp(v->string, "__metadata__") == 0) continue;
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(v, "dtype"), *sh = cJSON_GetObjectItemCaseSensitive(v, "shape"),
                *of = cJSON_GetObjectItemCaseSensitive(v, "data_offsets");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || cJSON_GetArraySize(sh) > 8 || !cJSON_IsArray(of) ||
        cJSON_GetArraySize(of) != 2) {
      fprintf(stderr, "effml-adapter: %s: malformed entry \"%s\"\n", base_path, v->string);
      goto done;
    }
    entry *e = &es[k++];
    e->name = v->string;
    e->dtype = dtype_of(dt->valuestring);
    e->ndim = cJSON_GetArraySize(sh);
    for (int d = 0; d < e->ndim; ++d) e->shape[d] = (int64_t)cJSON_GetArrayItem(sh, d)->valuedouble;
    e->begin = (uint64_t)cJSON_GetArrayItem(of, 0)->valuedouble;
    e->end = (uint64_t)cJSON_GetArrayItem(of, 1)->valuedouble;
    e->module = -1;
    if (e->end < e->begin) {
      fprintf(stderr, "effml-adapter: %s: bad offsets for \"%s\"\n", base_path, e->name);
      goto done;
    }
  }
  qsort(es, (size_t)ne, sizeof *es, cmp_entry);
  /* plan: every module's weight (and bias) in the base, mergeable dtypes */
  int64_t nm = effml_adapter_peft_num_modules(a);
  for (int64_t m = 0; m < nm; ++m) {
    const char *mod = effml_adapter_peft_module_name(a, m), *x = mod;
    if (strncmp(x, "base_model.model.", 17) == 0) x += 17;
    size_t xl = strlen(x);
    entry *w = NULL, *b = NULL;
    for (int i = 0; i < ne; ++i)
      if (strncmp(es[i].name, x, xl) == 0) {
        if (strcmp(es[i].name + xl, ".weight") == 0) w = &es[i];
        if (strcmp(es[i].name + xl, ".bias") == 0) b = &es[i];
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
    printf("%d other tensors copied unchanged\n", ne - (int)nm);
    rc = 0;
    goto done;
  }
  size_t tl = strlen(out_path) + 32;
  tmp = (char *)malloc(tl);
  if (tmp == NULL) goto done;
  snprintf(tmp, tl, "%s.tmp.%ld", out_path, (long)getpid());
  f = fopen(tmp, "wb");
  if (f == NULL || write_full(f, len8, 8) || write_full(f, hdr, n)) {
    fprintf(stderr, "effml-adapter: cannot write %s: %s\n", tmp, strerror(errno));
    goto done;
  }
  uint64_t data0 = 8 + n, pos = 0;
  int64_t cached = -1;
  pg.n = ne;
  pg.total = ne ? es[ne - 1].end : 0;
  for (int i = 0; i < ne; ++i) {
    entry *e = &es[i];
    if (g_signal) goto done;
    if (e->begin != pos) {
      fprintf(stderr, "effml-adapter: %s: tensors are not contiguous at \"%s\"\n", base_path, e->name);
      goto done;
    }
    size_t bytes = (size_t)(e->end - e->begin);
    int bias_changes = effml_adapter_peft_changes_bias(a) || strcmp(effml_adapter_peft_type(a), "IA3") == 0;
    /* a bias the adapter does not change is copied like any other tensor (last branch) */
    const char *what = e->module >= 0 && (bias_changes || !e->is_bias) ? "merging" : "copying";
    progress_show(&pg, i + 1, e->begin, what, e->name);
    if (e->module >= 0 && !bias_changes && !e->is_bias) {
      if (pg.mode == 0) fprintf(stderr, "effml-adapter: merging %s\n", effml_adapter_peft_module_name(a, e->module));
      if (merge_weight_direct(ctx, a, fd, data0, e, f)) goto done;
    } else if (e->module >= 0 && bias_changes) {
      /* a module's weight and bias come from one merge (bias: unchanged bytes unless the adapter
       * changes it, lora_bias or IA3); the other of the pair is kept until its turn (adjacent
       * in practice: "X.bias" and "X.weight" sort together) */
      if (cached != e->module) {
        free(cw);
        free(cb);
        cw = cb = NULL;
        entry *w = NULL, *b = NULL;
        for (int j = 0; j < ne; ++j)
          if (es[j].module == e->module) {
            if (es[j].is_bias) b = &es[j];
            else w = &es[j];
          }
        if (pg.mode == 0) fprintf(stderr, "effml-adapter: merging %s\n", effml_adapter_peft_module_name(a, e->module));
        if (merge_module(ctx, a, fd, data0, w, b, &cw, &cb)) goto done;
        cached = e->module;
      }
      if (write_full(f, e->is_bias ? cb : cw, bytes)) {
        fprintf(stderr, "effml-adapter: write failed: %s\n", strerror(errno));
        goto done;
      }
    } else {
      size_t chunk = 1u << 24;
      buf = malloc(chunk);
      if (buf == NULL) goto done;
      for (size_t off = 0; off < bytes; off += chunk) {
        if (g_signal) goto done;
        size_t c = bytes - off < chunk ? bytes - off : chunk;
        if (read_full(fd, buf, c, data0 + e->begin + off) || write_full(f, buf, c)) {
          fprintf(stderr, "effml-adapter: copying %s failed: %s\n", e->name, strerror(errno));
          goto done;
        }
      }
      free(buf);
      buf = NULL;
    }
    pos = e->end;
  }
  progress_show(&pg, ne, pg.total, "done", "");
  progress_break(&pg);
  if (g_signal) goto done; /* the last chance to stop before the rename */
  if (fflush(f) != 0 || fsync(fileno(f)) != 0 || fclose(f) != 0) {
    f = NULL;
    fprintf(stderr, "effml-adapter: cannot write %s: %s\n", tmp, strerror(errno));
    goto done;
  }
  f = NULL;
  if (rename(tmp, out_path) != 0) {
    fprintf(stderr, "effml-adapter: cannot rename %s to %s: %s\n", tmp, out_path, strerror(errno));
    goto done;
  }
  fprintf(stderr, "effml-adapter: wrote %s (%lld modules merged)\n", out_path, (long long)nm);
  rc = 0;
done:
  progress_break(&pg);
  if (f) fclose(f);
  if (rc != 0 && tmp) unlink(tmp);
  if (rc != 0 && g_signal) { /* whatever failed on the way, it was the interruption */
    fprintf(stderr, "effml-adapter: interrupted by %s: nothing written%s%s%s\n",
            g_signal == SIGINT ? "SIGINT" : "SIGTERM", dry_run ? "" : " (", dry_run ? "" : out_path,
            dry_run ? "" : " is as it was; the temporary file is removed)");
    rc = 128 + g_signal;
  }
  catch_signals(0);
  g_ctx = NULL;
  free(buf);
  free(cw);
  free(cb);
  free(tmp);
  free(es);
  cJSON_Delete(root);
  free(hdr);
  if (fd >= 0) close(fd);
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
