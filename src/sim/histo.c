/* The histo slide set: lays out and writes each slide in turn, then the
 * label files. Slide i is a function of (seed, i, tumour label) alone. */
#include <stdlib.h>
#include <string.h>

#include "sim/histo_internal.h"
#include "sim/sim_internal.h"

enum { STREAM_SET_LABELS = 20 };

nic_status nic_histo_generate(const nic_histo_opts *o, const char *outdir, nic_error *err) {
  nic_status s = nic_histo_check(o, err);
  if (s != NIC_OK) return s;
  if ((s = sim_mkdirs(outdir, err)) != NIC_OK) return s;
  const char *prefix = o->prefix ? o->prefix : "histo";
  char lpath[4096], spath[4096], tpath[4096];
  if ((s = sim_path(lpath, sizeof lpath, err, "%s/labels.csv", outdir)) != NIC_OK) return s;
  if ((s = sim_path(spath, sizeof spath, err, "%s/slides.csv", outdir)) != NIC_OK) return s;
  int *tumour = malloc(sizeof(int) * (size_t)o->count);
  if (!tumour) return nic_err(err, NIC_ENOMEM, "out of memory");
  /* Exactly floor(count * ratio) tumour slides, in a seeded random order. */
  int npos = (int)(o->count * o->tumour_ratio + 1e-9);
  for (int i = 0; i < o->count; i++) tumour[i] = i < npos;
  nic_rng r;
  sim_rng(&r, o->seed, STREAM_SET_LABELS, 0, 0);
  sim_shuffle_int(&r, tumour, o->count);

  FILE *lf = NULL, *sf = NULL;
  nic_histo_layout *l = NULL;
  if ((s = sim_fopen(&lf, lpath, "w", err)) != NIC_OK) goto done;
  if ((s = sim_fopen(&sf, spath, "w", err)) != NIC_OK) goto done;
  fprintf(lf, "case_id,slide_id,label\n");
  fprintf(sf, "slide_id,path,mpp,tumour,tumour_fraction,mitotic_density,prolif_score,"
              "survival_time,survival_event\n");
  for (int i = 0; i < o->count; i++) {
    char id[256], file[300];
    snprintf(id, sizeof id, "%s_%04d", prefix, i);
    snprintf(file, sizeof file, "%s.tif", id);
    if ((s = sim_path(tpath, sizeof tpath, err, "%s/%s", outdir, file)) != NIC_OK) goto done;
    if ((s = nic_histo_layout_create(&l, o, i, tumour[i], err)) != NIC_OK) goto done;
    if ((s = nic_histo_write_tiff(l, tpath, o->jpeg_quality, o->threads, err)) != NIC_OK) goto done;
    const nic_histo_info *in = nic_histo_layout_info(l);
    fprintf(lf, "%s,%s,%d\n", id, id, in->tumour);
    fprintf(sf, "%s,%s,%.9g,%d,%.6f,%.6f,%.6f,%.2f,%d\n", id, file, in->mpp, in->tumour,
            in->tumour_fraction, in->mitotic_density, in->prolif_score, in->survival_time,
            in->survival_event);
    nic_histo_layout_free(l);
    l = NULL;
    if (o->progress) o->progress(o->progress_user, i + 1, o->count);
  }
done:
  nic_histo_layout_free(l);
  free(tumour);
  if (sf) {
    nic_status s2 = sim_fclose(sf, spath, s == NIC_OK ? err : NULL);
    if (s == NIC_OK) s = s2;
  }
  if (lf) {
    nic_status s2 = sim_fclose(lf, lpath, s == NIC_OK ? err : NULL);
    if (s == NIC_OK) s = s2;
  }
  return s;
}
