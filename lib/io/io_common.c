/* Shared pieces of lib/io: strict UTF-8 validation and atomic file writes. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io_internal.h"

int effml__utf8_valid(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t len;
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;      /* no overlong 3-byte forms */
      else if (c == 0xED) hi = 0x9F; /* no UTF-16 surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;      /* no overlong 4-byte forms */
      else if (c == 0xF4) hi = 0x8F; /* nothing above U+10FFFF */
    } else {
      return 0; /* continuation byte, C0/C1 or F5..FF lead byte */
    }
    if (n - i < len) return 0;
    if (s[i + 1] < lo || s[i + 1] > hi) return 0;
    for (size_t k = 2; k < len; ++k)
      if (s[i + k] < 0x80 || s[i + k] > 0xBF) return 0;
    i += len;
  }
  return 1;
}

/* The temporary file is "<path>.tmp<pid>.<k>", created with O_EXCL (so two
 * writers never share one) and mode 0666 minus the umask, like fopen(). */
effml_status effml__afile_open(effml_context *ctx, effml__afile *af, const char *path,
                               const char *fn) {
  memset(af, 0, sizeof *af);
  af->path = path;
  size_t plen = strlen(path);
  size_t cap = plen + 48;
  af->tmp = (char *)effml__alloc_or_err(ctx, cap, "the temporary file name");
  if (af->tmp == NULL) return EFFML_E_NOMEM;
  int fd = -1;
  for (int k = 0; k < 100 && fd < 0; ++k) {
    snprintf(af->tmp, cap, "%s.tmp%ld.%d", path, (long)getpid(), k);
    fd = open(af->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0) {
    int e = errno;
    effml__free(ctx, af->tmp);
    af->tmp = NULL;
    return effml__err(ctx, EFFML_E_IO, "%s: cannot create a temporary file next to '%s': %s", fn,
                      path, strerror(e));
  }
  af->f = fdopen(fd, "wb");
  if (af->f == NULL) {
    int e = errno;
    close(fd);
    unlink(af->tmp);
    effml__free(ctx, af->tmp);
    af->tmp = NULL;
    return effml__err(ctx, EFFML_E_IO, "%s: cannot open a stream for '%s': %s", fn, path,
                      strerror(e));
  }
  return EFFML_OK;
}

void effml__afile_write(effml__afile *af, const void *p, size_t n) {
  if (af->failed || n == 0) return;
  if (fwrite(p, 1, n, af->f) != n) {
    af->failed = 1;
    af->err = errno ? errno : EIO;
  }
}

effml_status effml__afile_commit(effml_context *ctx, effml__afile *af, const char *fn) {
  if (!af->failed && fflush(af->f) != 0) {
    af->failed = 1;
    af->err = errno;
  }
  if (!af->failed && fsync(fileno(af->f)) != 0 && errno != EINVAL && errno != EROFS) {
    af->failed = 1;
    af->err = errno;
  }
  if (fclose(af->f) != 0 && !af->failed) {
    af->failed = 1;
    af->err = errno;
  }
  af->f = NULL;
  if (!af->failed && rename(af->tmp, af->path) != 0) {
    af->failed = 1;
    af->err = errno;
  }
  effml_status st = EFFML_OK;
  if (af->failed) {
    unlink(af->tmp);
    st = effml__err(ctx, EFFML_E_IO, "%s: cannot write '%s': %s", fn, af->path,
                    strerror(af->err));
  }
  effml__free(ctx, af->tmp);
  af->tmp = NULL;
  return st;
}

void effml__afile_abort(effml_context *ctx, effml__afile *af) {
  if (af->f) fclose(af->f);
  af->f = NULL;
  if (af->tmp) unlink(af->tmp);
  effml__free(ctx, af->tmp);
  af->tmp = NULL;
}
