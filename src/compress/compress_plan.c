/* The cell plan of one slide: the kept cells, the order readers take them
 * in (block by block within bands, see nic_cell_plan), and the chunks of
 * work handed to reader threads. */
#include <stdlib.h>
#include <string.h>

#include "compress/compress_internal.h"

void nic__plan_free(nic_cell_plan *p) {
  free(p->cells);
  free(p->order);
  free(p->band_end);
  free(p->chunk_end);
  memset(p, 0, sizeof *p);
}

/* Appends one chunk end, growing the array as needed. */
static int push_chunk(nic_cell_plan *p, int64_t *cap, int64_t end) {
  if (p->nchunks == *cap) {
    int64_t nc = *cap ? 2 * *cap : 256;
    int64_t *a = realloc(p->chunk_end, sizeof *a * (size_t)nc);
    if (!a) return -1;
    p->chunk_end = a;
    *cap = nc;
  }
  p->chunk_end[p->nchunks++] = end;
  return 0;
}

/* The chunks of one block's read positions [s0, s1): split where batches
 * end, so that every chunk fills one batch slot. */
static int push_block(nic_cell_plan *p, int64_t *cap, int64_t s0, int64_t s1, int batch) {
  while (s0 < s1) {
    int64_t next = (s0 / batch + 1) * batch;
    int64_t end = next < s1 ? next : s1;
    if (push_chunk(p, cap, end) != 0) return -1;
    s0 = end;
  }
  return 0;
}

/* The kept cells in row-major order, and where each grid row's start in
 * that list (row_first, grid_h + 1 entries). */
static nic_status collect_cells(nic_cell_plan *p, const uint8_t *keep, int grid_h, int grid_w,
                                int64_t *row_first, nic_error *err) {
  int64_t cells = (int64_t)grid_h * grid_w, n = 0;
  for (int64_t c = 0; c < cells; c++) n += keep[c] != 0;
  p->n = n;
  p->cells = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
  p->order = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
  if (!p->cells || !p->order)
    return nic_err(err, NIC_ENOMEM, "out of memory for %lld cells", (long long)n);
  int64_t k = 0;
  for (int i = 0; i < grid_h; i++) {
    row_first[i] = k;
    for (int j = 0; j < grid_w; j++)
      if (keep[(int64_t)i * grid_w + j]) p->cells[k++] = (int32_t)((int64_t)i * grid_w + j);
  }
  row_first[grid_h] = k;
  return NIC_OK;
}

nic_status nic__plan_build(nic_cell_plan *p, const uint8_t *keep, int grid_h, int grid_w,
                           int band_rows, int block_cols, int batch, nic_error *err) {
  memset(p, 0, sizeof *p);
  if (grid_h < 1 || grid_w < 1 || band_rows < 1 || block_cols < 1 || batch < 1)
    return nic_err(err, NIC_EINVAL, "invalid plan parameters");
  p->band_rows = band_rows;
  p->block_cols = block_cols;
  p->nbands = (grid_h + band_rows - 1) / band_rows;
  int64_t *row_first = malloc(sizeof(int64_t) * ((size_t)grid_h + 1));
  int64_t *cursor = malloc(sizeof(int64_t) * (size_t)band_rows);
  p->band_end = malloc(sizeof(int64_t) * (size_t)p->nbands);
  nic_status st = NIC_OK;
  if (!row_first || !cursor || !p->band_end)
    st = nic_err(err, NIC_ENOMEM, "out of memory for the cell plan");
  if (st == NIC_OK) st = collect_cells(p, keep, grid_h, grid_w, row_first, err);
  int64_t s = 0, cap = 0;
  for (int b = 0; b < p->nbands && st == NIC_OK; b++) {
    int i0 = b * band_rows, i1 = i0 + band_rows < grid_h ? i0 + band_rows : grid_h;
    /* Each row's cursor walks its kept cells left to right as the blocks
     * advance, so every cell is visited once. */
    for (int i = i0; i < i1; i++) cursor[i - i0] = row_first[i];
    for (int j0 = 0; j0 < grid_w && st == NIC_OK; j0 += block_cols) {
      int64_t s0 = s;
      for (int i = i0; i < i1; i++) {
        int64_t *cur = &cursor[i - i0];
        while (*cur < row_first[i + 1] && p->cells[*cur] - (int64_t)i * grid_w < j0 + block_cols)
          p->order[s++] = (int32_t)(*cur)++;
      }
      if (push_block(p, &cap, s0, s, batch) != 0)
        st = nic_err(err, NIC_ENOMEM, "out of memory for the cell plan");
    }
    p->band_end[b] = s;
    int64_t size = s - row_first[i0];
    if (size > p->max_band) p->max_band = size;
  }
  free(row_first);
  free(cursor);
  if (st != NIC_OK) nic__plan_free(p);
  return st;
}
