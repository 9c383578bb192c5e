/* Command-line conventions shared by every example (a header, not a program:
 * examples/CMakeLists.txt builds only the *.c files):
 *  - `-h` / `--help` prints the usage on stdout and exits 0;
 *  - an unknown option, a missing value or a malformed number prints what is
 *    wrong and the usage on stderr and exits 2;
 *  - options take their value as the next argument or as `--name=value`;
 *  - nothing is written into the working directory unless asked: files go to
 *    the output folder ex_out_dir() (`--out`, else $EFFML_EXAMPLES_OUT, else
 *    ${TMPDIR:-/tmp}/effml-examples), created on demand.
 * Exit status 1 means a failure while running (a libeffml error). */
#ifndef EFFML_EXAMPLE_ARGS_H
#define EFFML_EXAMPLE_ARGS_H

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef enum { EX_STR, EX_INT, EX_I64, EX_U64, EX_F64, EX_FLAG } ex_kind;

typedef struct ex_opt {
  const char *name; /* "--epochs" */
  ex_kind kind;
  void *dst;        /* const char ** / int * / int64_t * / unsigned long long * / double * / int * */
  const char *meta; /* "N", "DIR", ... (ignored for flags) */
  const char *help;
} ex_opt;

#define EX_NOPTS(a) ((int)(sizeof(a) / sizeof((a)[0])))

static inline void ex_usage(FILE *f, const char *prog, const char *about, const ex_opt *o, int n) {
  fprintf(f, "usage: %s [options]\n\n%s\n\noptions:\n", prog, about);
  for (int i = 0; i < n; ++i) {
    char left[48];
    if (o[i].kind == EX_FLAG)
      snprintf(left, sizeof left, "%s", o[i].name);
    else
      snprintf(left, sizeof left, "%s %s", o[i].name, o[i].meta);
    fprintf(f, "  %-22s %s\n", left, o[i].help);
  }
  fprintf(f, "  %-22s %s\n", "-h, --help", "print this help and exit");
}

static inline void ex_fail(const char *prog, const char *about, const ex_opt *o, int n, const char *what,
                    const char *arg) {
  fprintf(stderr, "%s: %s '%s'\n\n", prog, what, arg);
  ex_usage(stderr, prog, about, o, n);
  exit(2);
}

/* Parse argv against o[0..n); exits 0 on --help and 2 on bad usage. */
static inline void ex_parse(int argc, char **argv, const char *about, const ex_opt *o, int n) {
  const char *prog = argc > 0 ? argv[0] : "example";
  for (int i = 1; i < argc; ++i) {
    const char *a = argv[i];
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      ex_usage(stdout, prog, about, o, n);
      exit(0);
    }
    const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
    size_t len = eq ? (size_t)(eq - a) : strlen(a);
    const ex_opt *opt = NULL;
    for (int k = 0; k < n && !opt; ++k)
      if (strlen(o[k].name) == len && strncmp(o[k].name, a, len) == 0) opt = &o[k];
    if (!opt) ex_fail(prog, about, o, n, "unknown option", a);
    if (opt->kind == EX_FLAG) {
      if (eq) ex_fail(prog, about, o, n, "this option takes no value:", a);
      *(int *)opt->dst = 1;
      continue;
    }
    const char *v = eq ? eq + 1 : NULL;
    if (!v) {
      if (i + 1 >= argc) ex_fail(prog, about, o, n, "missing value for option", a);
      v = argv[++i];
    }
    char *end = NULL;
    errno = 0;
    switch (opt->kind) {
    case EX_STR:
      *(const char **)opt->dst = v;
      continue;
    case EX_INT: {
      long x = strtol(v, &end, 10);
      if (errno || end == v || *end || x < INT_MIN || x > INT_MAX) break;
      *(int *)opt->dst = (int)x;
      continue;
    }
    case EX_I64: {
      long long x = strtoll(v, &end, 10);
      if (errno || end == v || *end) break;
      *(int64_t *)opt->dst = (int64_t)x;
      continue;
    }
    case EX_U64: {
      unsigned long long x = strtoull(v, &end, 10);
      if (errno || end == v || *end || v[0] == '-') break;
      *(unsigned long long *)opt->dst = x;
      continue;
    }
    case EX_F64: {
      double x = strtod(v, &end);
      if (errno || end == v || *end) break;
      *(double *)opt->dst = x;
      continue;
    }
    case EX_FLAG:
      continue;
    }
    char what[96];
    snprintf(what, sizeof what, "%s needs %s, got", opt->name,
             opt->kind == EX_F64 ? "a number" : opt->kind == EX_U64 ? "a non-negative integer"
                                                                    : "an integer");
    ex_fail(prog, about, o, n, what, v);
  }
}

/* Create `path` and its parents (like mkdir -p); 0 on success. */
static inline int ex_mkdirs(const char *path) {
  char buf[4096];
  size_t len = strlen(path);
  if (len == 0 || len >= sizeof buf) return -1;
  memcpy(buf, path, len + 1);
  for (size_t i = 1; i <= len; ++i) {
    if (buf[i] != '/' && buf[i] != '\0') continue;
    char c = buf[i];
    buf[i] = '\0';
    if (mkdir(buf, 0777) != 0 && errno != EEXIST) return -1;
    buf[i] = c;
  }
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
}

/* The output folder: `given` (from --out) if not NULL, else $EFFML_EXAMPLES_OUT, else
 * ${TMPDIR:-/tmp}/effml-examples.  Created if missing; exits 1 if it cannot be. */
static inline const char *ex_out_dir(const char *given) {
  static char buf[4096];
  const char *env = getenv("EFFML_EXAMPLES_OUT");
  if (given && *given)
    snprintf(buf, sizeof buf, "%s", given);
  else if (env && *env)
    snprintf(buf, sizeof buf, "%s", env);
  else {
    const char *tmp = getenv("TMPDIR");
    snprintf(buf, sizeof buf, "%s/effml-examples", tmp && *tmp ? tmp : "/tmp");
  }
  if (ex_mkdirs(buf) != 0) {
    fprintf(stderr, "cannot create the output folder %s: %s\n", buf, strerror(errno));
    exit(1);
  }
  return buf;
}

/* dir + "/" + name into a static buffer (one at a time). */
static inline const char *ex_path(const char *dir, const char *name) {
  static char buf[8192];
  snprintf(buf, sizeof buf, "%s/%s", dir, name);
  return buf;
}

#endif /* EFFML_EXAMPLE_ARGS_H */
