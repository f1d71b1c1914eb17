/* Shared helpers of the simulators: random draws, directories, PNG output
 * (through the viz module's writer) and JPEG output. libjpeg reports errors
 * by longjmp from a callback; it is caught here so the library never exits
 * and every failure becomes a nic_error naming the file. */
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* libjpeg's header needs stdio.h and stddef.h first. */
#include <jerror.h>
#include <jpeglib.h>

#include "nic/plot.h"
#include "sim/sim_internal.h"

int64_t sim_poisson(nic_rng *r, double lambda) {
  if (lambda <= 0) return 0;
  if (lambda > 50) {
    double v = lambda + sqrt(lambda) * nic_rng_normal(r);
    return v < 0 ? 0 : (int64_t)llround(v);
  }
  /* Knuth: count uniforms until their product drops below e^-lambda. */
  double limit = exp(-lambda), p = 1.0;
  int64_t k = -1;
  do {
    k++;
    p *= nic_rng_uniform(r);
  } while (p > limit);
  return k;
}

void sim_shuffle_int(nic_rng *r, int *a, int n) {
  for (int i = n - 1; i > 0; i--) {
    int j = (int)nic_rng_below(r, (uint64_t)i + 1);
    int t = a[i];
    a[i] = a[j];
    a[j] = t;
  }
}

int sim_threads(int threads) {
  return threads > 0 ? threads : omp_get_max_threads();
}

nic_status sim_mkdirs(const char *dir, nic_error *err) {
  char buf[4096];
  size_t n = strlen(dir);
  if (n == 0 || n >= sizeof buf) return nic_err(err, NIC_EINVAL, "bad output directory '%s'", dir);
  memcpy(buf, dir, n + 1);
  /* Create each prefix ending at a '/', then the whole path. */
  for (size_t i = 1; i <= n; i++) {
    if (buf[i] != '/' && buf[i] != '\0') continue;
    char c = buf[i];
    buf[i] = '\0';
    if (mkdir(buf, 0777) != 0 && errno != EEXIST)
      return nic_err(err, NIC_EIO, "cannot create directory %s: %s", buf, strerror(errno));
    buf[i] = c;
  }
  struct stat st;
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
    return nic_err(err, NIC_EIO, "%s is not a directory", dir);
  return NIC_OK;
}

nic_status sim_path(char *buf, size_t cap, nic_error *err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, cap, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= cap) return nic_err(err, NIC_EINVAL, "path too long: %s...", buf);
  return NIC_OK;
}

nic_status sim_fopen(FILE **f, const char *path, const char *mode, nic_error *err) {
  *f = fopen(path, mode);
  if (!*f) return nic_err(err, NIC_EIO, "cannot open %s: %s", path, strerror(errno));
  return NIC_OK;
}

nic_status sim_fclose(FILE *f, const char *path, nic_error *err) {
  int bad = ferror(f);
  if (fclose(f) != 0 || bad) return nic_err(err, NIC_EIO, "error writing %s", path);
  return NIC_OK;
}

nic_status sim_write_file(const char *path, const void *data, size_t n, nic_error *err) {
  FILE *f = NULL;
  if (sim_fopen(&f, path, "wb", err) != NIC_OK) return err ? err->code : NIC_EIO;
  fwrite(data, 1, n, f);
  return sim_fclose(f, path, err);
}

/* ---- PNG ---- */

nic_status sim_png_write(const char *path, const uint8_t *px, int w, int h, int channels,
                         size_t stride, int zlevel, nic_error *err) {
  nic_png_image im = {px, w, h, channels, stride};
  return nic_png_write(path, &im, zlevel, err);
}

/* ---- JPEG ---- */

typedef struct jpeg_errctx {
  struct jpeg_error_mgr mgr;
  jmp_buf jmp;
} jpeg_errctx;

static void jpeg_error_cb(j_common_ptr cinfo) {
  jpeg_errctx *e = (jpeg_errctx *)cinfo->err;
  longjmp(e->jmp, 1);
}

/* A growing in-memory destination. jpeg_mem_dest would do, but after a
 * failure its buffer pointer can be stale; owning the buffer here makes
 * cleanup on every path simple. */
typedef struct mem_dest {
  struct jpeg_destination_mgr pub;
  uint8_t *buf;
  size_t cap;
} mem_dest;

static void mem_init(j_compress_ptr c) {
  mem_dest *d = (mem_dest *)c->dest;
  d->pub.next_output_byte = d->buf;
  d->pub.free_in_buffer = d->cap;
}

static boolean mem_empty(j_compress_ptr c) {
  mem_dest *d = (mem_dest *)c->dest;
  uint8_t *nb = realloc(d->buf, d->cap * 2);
  if (!nb) ERREXIT(c, JERR_OUT_OF_MEMORY);
  d->buf = nb;
  d->pub.next_output_byte = nb + d->cap; /* the whole old buffer was full */
  d->pub.free_in_buffer = d->cap;
  d->cap *= 2;
  return TRUE;
}

static void mem_term(j_compress_ptr c) {
  (void)c;
}

nic_status sim_jpeg_encode(const uint8_t *rgb, int w, int h, size_t stride, int quality,
                           uint8_t **out, size_t *outlen, nic_error *err) {
  struct jpeg_compress_struct c;
  jpeg_errctx e;
  /* On the heap so that its fields, changed by the callbacks after setjmp,
   * are read back from memory after a longjmp. */
  mem_dest *d = calloc(1, sizeof *d);
  if (d) d->buf = malloc(d->cap = 32768);
  if (!d || !d->buf) {
    if (d) free(d);
    return nic_err(err, NIC_ENOMEM, "out of memory compressing a JPEG");
  }
  d->pub.init_destination = mem_init;
  d->pub.empty_output_buffer = mem_empty;
  d->pub.term_destination = mem_term;
  c.err = jpeg_std_error(&e.mgr);
  e.mgr.error_exit = jpeg_error_cb;
  if (setjmp(e.jmp)) {
    char msg[JMSG_LENGTH_MAX];
    e.mgr.format_message((j_common_ptr)&c, msg);
    jpeg_destroy_compress(&c);
    free(d->buf);
    free(d);
    return nic_err(err, NIC_EIO, "JPEG compression failed: %s", msg);
  }
  jpeg_create_compress(&c);
  c.dest = &d->pub;
  c.image_width = (JDIMENSION)w;
  c.image_height = (JDIMENSION)h;
  c.input_components = 3;
  c.in_color_space = JCS_RGB;
  jpeg_set_defaults(&c); /* YCbCr with 2x2 chroma subsampling */
  jpeg_set_quality(&c, quality, TRUE);
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = (JSAMPROW)(rgb + (size_t)c.next_scanline * stride);
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  *outlen = d->cap - d->pub.free_in_buffer;
  *out = d->buf;
  jpeg_destroy_compress(&c);
  free(d);
  return NIC_OK;
}
