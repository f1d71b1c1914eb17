/* The slide model: what a trained network needs around it (task, classes,
 * crop, feature standardisation, target scaling), model files, and
 * prediction with test-time augmentation. */
#include <json-c/json.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "io/json_util.h"
#include "slidemodel/sm_internal.h"

/* Largest input batch of one CNN forward at prediction (bytes); the T
 * crops are run in chunks of this, whatever the slide, so that the result
 * does not depend on anything but the model and the slide. */
#define SM_PREDICT_BATCH_BYTES ((int64_t)256 << 20)

static const char *const kind_names[] = {"nic", "abmil", "cluster"};

const char *nic_sm_kind_name(nic_sm_kind k) {
  return (unsigned)k < 3 ? kind_names[k] : "unknown";
}

nic_status nic_sm_kind_from_name(const char *name, nic_sm_kind *k, nic_error *err) {
  for (int i = 0; name && i < 3; i++)
    if (!strcmp(name, kind_names[i])) {
      *k = (nic_sm_kind)i;
      return NIC_OK;
    }
  if (name && !strcmp(name, "cnn")) {
    *k = NIC_SM_CNN;
    return NIC_OK;
  }
  return nic_err(err, NIC_EINVAL, "unknown model '%s' (expected nic, abmil or cluster)",
                 name ? name : "(null)");
}

nic_sm_opts nic_sm_default_opts(void) {
  nic_sm_opts o;
  memset(&o, 0, sizeof o);
  o.kind = NIC_SM_CNN;
  o.crop = 400;
  o.filters = 128;
  o.strided = 6;
  o.hidden = 128;
  o.attn_dim = 128;
  o.pool = -1;
  o.dropout = 0.2f;
  o.scores = 1;
  o.smooth = 3;
  o.epochs = 60;
  o.batch = 0;
  o.lr = 0;
  o.weight_decay = 1e-4f;
  o.patience = 20;
  o.plateau_patience = 10;
  o.min_lr = 1e-6f;
  o.balance = NIC_BALANCE_BATCHES;
  o.orientations = 1;
  o.occlusion = 0.25f;
  o.instance_drop = 0.1f;
  o.max_instances = 8192;
  o.test_crops = 8;
  o.cache_mb = 2048;
  o.seed = 1;
  return o;
}

/* ---- life cycle ----------------------------------------------------------------- */

void nic_sm_free(nic_slidemodel *m) {
  if (!m) return;
  for (int i = 0; i < m->K; i++) free(m->class_names[i]);
  free(m->class_names);
  free(m->mean);
  free(m->istd);
  sm_abmil_release(&m->ab);
  nic_model_free(m->twin);
  nic_model_free(m->net);
  nic_tensor_free(&m->x);
  free(m->bag);
  free(m);
}

static nic_slidemodel *blank(int C) {
  nic_slidemodel *m = calloc(1, sizeof *m);
  if (!m) return NULL;
  m->C = C;
  m->mean = calloc((size_t)C, sizeof *m->mean);
  m->istd = malloc(sizeof *m->istd * (size_t)C);
  if (!m->mean || !m->istd) {
    nic_sm_free(m);
    return NULL;
  }
  for (int c = 0; c < C; c++) m->istd[c] = 1;
  m->y_sd = 1;
  m->best_epoch = -1;
  m->x = (nic_tensor)NIC_TENSOR_INIT;
  return m;
}

nic_status sm_model_new(nic_slidemodel **out, const nic_cohort *c, const nic_sm_opts *o, int C,
                        nic_error *err) {
  nic_slidemodel *m = blank(C);
  if (!m) return nic_err(err, NIC_ENOMEM, "out of memory");
  m->kind = o->kind;
  m->task = c->task;
  if (c->task == NIC_TASK_BINARY || c->task == NIC_TASK_MULTICLASS) {
    m->class_names = calloc((size_t)c->num_classes, sizeof *m->class_names);
    if (!m->class_names) {
      nic_sm_free(m);
      return nic_err(err, NIC_ENOMEM, "out of memory");
    }
    m->K = c->num_classes;
    for (int i = 0; i < m->K; i++)
      if (!(m->class_names[i] = sm_strdup(c->class_names[i]))) {
        nic_sm_free(m);
        return nic_err(err, NIC_ENOMEM, "out of memory");
      }
    m->ordinal = c->ordinal;
  }
  m->nout = m->K ? m->K : 1;
  m->crop = o->crop;
  /* the cluster detector: at least one score map per class for multiclass */
  int scores = c->task == NIC_TASK_MULTICLASS && o->scores < m->K ? m->K : o->scores;
  m->filters = o->kind == NIC_SM_CLUSTER ? scores : o->filters;
  m->smooth = o->kind == NIC_SM_CLUSTER ? o->smooth : 0;
  m->strided = o->strided;
  m->hidden = o->hidden;
  m->attn_dim = o->attn_dim;
  m->pool = o->pool >= 0                                                     ? o->pool
            : (c->task == NIC_TASK_BINARY || c->task == NIC_TASK_MULTICLASS) ? NIC_POOL_MAX
                                                                             : NIC_POOL_AVG;
  m->dropout = o->dropout;
  m->test_crops = o->test_crops > 0 ? o->test_crops : 1;
  m->use_or = o->orientations;
  m->seed = o->seed;
  *out = m;
  return NIC_OK;
}

/* ---- accessors ---------------------------------------------------------------------- */

nic_sm_kind nic_sm_kind_of(const nic_slidemodel *m) {
  return m->kind;
}
nic_task nic_sm_task(const nic_slidemodel *m) {
  return m->task;
}
int nic_sm_num_scores(const nic_slidemodel *m) {
  return m->task == NIC_TASK_MULTICLASS ? m->K : 1;
}
int nic_sm_num_classes(const nic_slidemodel *m) {
  return m->K;
}
const char *nic_sm_class_name(const nic_slidemodel *m, int i) {
  return i >= 0 && i < m->K ? m->class_names[i] : NULL;
}
int nic_sm_embed_dim(const nic_slidemodel *m) {
  return m->C;
}
int nic_sm_crop(const nic_slidemodel *m) {
  return m->kind != NIC_SM_ABMIL ? m->crop : 0;
}
int nic_sm_best_epoch(const nic_slidemodel *m) {
  return m->best_epoch;
}

/* ---- files ----------------------------------------------------------------------------- */

static json_object *float_array(const float *v, int n) {
  json_object *a = json_object_new_array();
  for (int i = 0; a && i < n; i++) json_object_array_add(a, nic_json_new_float(v[i]));
  return a;
}

nic_status nic_sm_save(nic_slidemodel *m, const char *path, nic_error *err) {
  json_object *o = json_object_new_object();
  if (!o) return nic_err(err, NIC_ENOMEM, "out of memory");
  json_object_object_add(o, "model", json_object_new_string(nic_sm_kind_name(m->kind)));
  json_object_object_add(o, "task", json_object_new_string(nic_task_name(m->task)));
  json_object *cl = json_object_new_array();
  for (int i = 0; i < m->K; i++)
    json_object_array_add(cl, json_object_new_string(m->class_names[i]));
  json_object_object_add(o, "classes", cl);
  json_object_object_add(o, "ordinal", json_object_new_boolean(m->ordinal));
  json_object_object_add(o, "embed_dim", json_object_new_int(m->C));
  json_object_object_add(o, "crop", json_object_new_int(m->crop));
  json_object_object_add(o, "filters", json_object_new_int(m->filters));
  json_object_object_add(o, "strided", json_object_new_int(m->strided));
  if (m->kind == NIC_SM_CLUSTER)
    json_object_object_add(o, "smooth", json_object_new_int(m->smooth));
  json_object_object_add(o, "hidden", json_object_new_int(m->hidden));
  json_object_object_add(o, "attn_dim", json_object_new_int(m->attn_dim));
  json_object_object_add(o, "pool",
                         json_object_new_string(m->pool == NIC_POOL_MAX ? "max" : "avg"));
  json_object_object_add(o, "dropout", nic_json_new_float(m->dropout));
  json_object_object_add(o, "test_crops", json_object_new_int(m->test_crops));
  json_object_object_add(o, "orientations", json_object_new_boolean(m->use_or));
  json_object_object_add(o, "feature_mean", float_array(m->mean, m->C));
  json_object_object_add(o, "feature_istd", float_array(m->istd, m->C));
  json_object_object_add(o, "target_mean", nic_json_new_double(m->y_mean));
  json_object_object_add(o, "target_sd", nic_json_new_double(m->y_sd));
  json_object_object_add(o, "risk_offset", nic_json_new_double(m->risk_offset));
  json_object_object_add(o, "seed", json_object_new_int64((int64_t)m->seed));
  json_object_object_add(o, "best_epoch", json_object_new_int(m->best_epoch));
  const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
  nic_status st = NIC_OK;
  if (!text)
    st = nic_err(err, NIC_ENOMEM, "out of memory");
  else
    nic_model_set_meta(m->net, "slidemodel", text);
  json_object_put(o);
  if (st == NIC_OK && !nic_model_get_meta(m->net, "slidemodel"))
    st = nic_err(err, NIC_ENOMEM, "out of memory");
  if (st == NIC_OK) st = nic_model_save(m->net, path, err);
  return st;
}

static int get_floats(json_object *o, const char *key, float *dst, int n) {
  json_object *a;
  if (!json_object_object_get_ex(o, key, &a) || !json_object_is_type(a, json_type_array) ||
      (int)json_object_array_length(a) != n)
    return -1;
  for (int i = 0; i < n; i++) {
    json_object *v = json_object_array_get_idx(a, (size_t)i);
    if (!json_object_is_type(v, json_type_double) && !json_object_is_type(v, json_type_int))
      return -1;
    dst[i] = (float)json_object_get_double(v);
    if (!isfinite(dst[i])) return -1;
  }
  return 0;
}

/* Fills m from the "slidemodel" metadata of its network. */
static nic_status parse_meta(nic_slidemodel *m, const char *path, nic_error *err) {
  const char *text = nic_model_get_meta(m->net, "slidemodel");
  if (!text)
    return nic_err(err, NIC_EFORMAT, "%s: not a slide model (no 'slidemodel' metadata)", path);
  char msg[256];
  json_object *o = nic_json_parse(text, strlen(text), msg, sizeof msg);
  if (!o || !json_object_is_type(o, json_type_object)) {
    if (o) json_object_put(o);
    return nic_err(err, NIC_EFORMAT, "%s: bad 'slidemodel' metadata: %s", path,
                   o ? "not an object" : msg);
  }
  nic_status st = NIC_OK;
  const char *kind = nic_json_get_str(o, "model"), *task = nic_json_get_str(o, "task");
  const char *pool = nic_json_get_str(o, "pool");
  int64_t C = 0, crop = 0, filters = 0, hidden = 0, attn = 0, tc = 0, best = -1, seed = 0;
  /* absent from files older than the options: the paper's six stride-2
   * blocks, and uncentred survival risks */
  int64_t strided = 6, smooth = 0;
  double ym = 0, ysd = 1, dropout = 0, roff = 0;
  int ordinal = 0, use_or = 0;
  json_object *cl = NULL;
  if (!kind || nic_sm_kind_from_name(kind, &m->kind, NULL) != NIC_OK || !task ||
      nic_task_from_name(task, &m->task, NULL) != NIC_OK || !pool ||
      nic_json_get_int(o, "embed_dim", 1, 1 << 20, &C) ||
      nic_json_get_int(o, "crop", 0, 1 << 20, &crop) ||
      nic_json_get_int(o, "filters", 0, 1 << 20, &filters) ||
      (json_object_object_get_ex(o, "strided", NULL) &&
       nic_json_get_int(o, "strided", 0, 8, &strided)) ||
      (json_object_object_get_ex(o, "smooth", NULL) &&
       nic_json_get_int(o, "smooth", 1, 1 << 10, &smooth)) ||
      nic_json_get_int(o, "hidden", 0, 1 << 20, &hidden) ||
      nic_json_get_int(o, "attn_dim", 0, 1 << 20, &attn) ||
      nic_json_get_int(o, "test_crops", 1, 1 << 20, &tc) ||
      nic_json_get_int(o, "best_epoch", -1, 1 << 30, &best) ||
      nic_json_get_int(o, "seed", INT64_MIN, INT64_MAX, &seed) ||
      nic_json_get_num(o, "target_mean", &ym) || nic_json_get_num(o, "target_sd", &ysd) ||
      (json_object_object_get_ex(o, "risk_offset", NULL) &&
       nic_json_get_num(o, "risk_offset", &roff)) ||
      nic_json_get_num(o, "dropout", &dropout) || nic_json_get_bool(o, "ordinal", &ordinal) ||
      nic_json_get_bool(o, "orientations", &use_or) ||
      !json_object_object_get_ex(o, "classes", &cl) || !json_object_is_type(cl, json_type_array))
    st = nic_err(err, NIC_EFORMAT, "%s: 'slidemodel' metadata is incomplete or invalid", path);
  if (st == NIC_OK) {
    m->C = (int)C;
    float *mean = realloc(m->mean, sizeof *mean * (size_t)C);
    if (mean) m->mean = mean;
    float *istd = realloc(m->istd, sizeof *istd * (size_t)C);
    if (istd) m->istd = istd;
    if (!mean || !istd) st = nic_err(err, NIC_ENOMEM, "out of memory");
  }
  if (st == NIC_OK && (get_floats(o, "feature_mean", m->mean, m->C) ||
                       get_floats(o, "feature_istd", m->istd, m->C)))
    st = nic_err(err, NIC_EFORMAT, "%s: feature_mean / feature_istd must hold %d numbers", path,
                 m->C);
  int K = st == NIC_OK ? (int)json_object_array_length(cl) : 0;
  int classify = m->task == NIC_TASK_BINARY || m->task == NIC_TASK_MULTICLASS;
  if (st == NIC_OK && (classify ? K < 2 || (m->task == NIC_TASK_BINARY && K != 2) : K != 0))
    st = nic_err(err, NIC_EFORMAT, "%s: %d classes for a %s task", path, K, nic_task_name(m->task));
  if (st == NIC_OK && K > 0) {
    m->class_names = calloc((size_t)K, sizeof *m->class_names);
    if (!m->class_names) st = nic_err(err, NIC_ENOMEM, "out of memory");
    for (int i = 0; i < K && st == NIC_OK; i++, m->K++) {
      const char *s = nic_json_str_value(json_object_array_get_idx(cl, (size_t)i));
      if (!s)
        st = nic_err(err, NIC_EFORMAT, "%s: class %d is not a string", path, i);
      else if (!(m->class_names[i] = sm_strdup(s)))
        st = nic_err(err, NIC_ENOMEM, "out of memory");
    }
  }
  if (st == NIC_OK) {
    m->nout = K ? K : 1;
    m->crop = (int)crop;
    m->filters = (int)filters;
    m->strided = (int)strided;
    m->smooth = (int)smooth;
    if (m->kind == NIC_SM_CLUSTER && m->smooth < 1)
      st = nic_err(err, NIC_EFORMAT, "%s: a cluster model without 'smooth'", path);
    m->hidden = (int)hidden;
    m->attn_dim = (int)attn;
    m->pool = !strcmp(pool, "max") ? NIC_POOL_MAX : NIC_POOL_AVG;
    m->dropout = (float)dropout;
    m->test_crops = (int)tc;
    m->best_epoch = (int)best;
    m->seed = (uint64_t)seed;
    m->y_mean = ym;
    m->y_sd = ysd > 0 ? ysd : 1;
    m->risk_offset = isfinite(roff) ? roff : 0;
    m->ordinal = ordinal;
    m->use_or = use_or;
  }
  json_object_put(o);
  return st;
}

/* Checks that the network is the one the metadata describes. */
static nic_status check_net(nic_slidemodel *m, const char *path, nic_error *err) {
  int nd;
  int64_t in[NIC_MAX_DIMS], out[NIC_MAX_DIMS];
  nic_model_node_shape(m->net, 0, &nd, in);
  if (m->kind == NIC_SM_ABMIL) {
    nic_status st = sm_abmil_bind(&m->ab, m->net, err);
    if (st != NIC_OK) return nic_err_prefix(err, "%s: ", path);
    if (m->ab.C != m->C || m->ab.K != m->nout)
      return nic_err(err, NIC_EFORMAT, "%s: ABMIL shapes disagree with the metadata", path);
    return NIC_OK;
  }
  int last = nic_model_num_nodes(m->net);
  if (last < 1) return nic_err(err, NIC_EFORMAT, "%s: the network is empty", path);
  nic_model_node_shape(m->net, last, &nd, out);
  if (in[1] != m->C || in[2] != m->crop || in[3] != m->crop || nd != 2 || out[1] != m->nout)
    return nic_err(err, NIC_EFORMAT,
                   "%s: the network takes %lldx%lldx%lld and gives %lld values, the metadata says "
                   "%dx%dx%d and %d",
                   path, (long long)in[1], (long long)in[2], (long long)in[3], (long long)out[1],
                   m->C, m->crop, m->crop, m->nout);
  const nic_param *score = nic_model_param(m->net, "conv1.weight");
  if (m->kind == NIC_SM_CLUSTER &&
      (sm_cnn_cam_node(m->net) < 0 || !score || score->value.shape[0] != m->filters))
    return nic_err(err, NIC_EFORMAT, "%s: not a cluster model of %d score maps", path, m->filters);
  if (m->kind == NIC_SM_CNN &&
      (sm_cnn_cam_node(m->net) < 0 || !nic_model_param(m->net, "bn1.gamma")))
    return nic_err(err, NIC_EFORMAT, "%s: not a NIC slide CNN", path);
  return NIC_OK;
}

nic_status nic_sm_load(nic_slidemodel **out, const char *path, nic_error *err) {
  *out = NULL;
  nic_slidemodel *m = blank(1);
  if (!m) return nic_err(err, NIC_ENOMEM, "out of memory");
  nic_status st = nic_model_load(&m->net, path, err);
  if (st == NIC_OK) st = parse_meta(m, path, err);
  if (st == NIC_OK) st = check_net(m, path, err);
  if (st != NIC_OK) {
    nic_sm_free(m);
    return st;
  }
  *out = m;
  return NIC_OK;
}

/* ---- prediction ---------------------------------------------------------------------------- */

void sm_model_accumulate(const nic_slidemodel *m, const float *out, double *acc) {
  if (m->K) { /* softmax probabilities */
    double mx = out[0], sum = 0;
    for (int c = 1; c < m->K; c++) mx = out[c] > mx ? out[c] : mx;
    for (int c = 0; c < m->K; c++) sum += exp(out[c] - mx);
    for (int c = 0; c < m->K; c++) acc[c] += exp(out[c] - mx) / sum;
  } else {
    acc[0] += out[0];
  }
}

nic_status sm_model_bag(nic_slidemodel *m, sm_data *d, int i, int o, const uint8_t *keep,
                        int64_t *n, nic_error *err) {
  const float *rows = NULL;
  nic_status st = sm_rows(d, i, o, &rows, err);
  if (st != NIC_OK) return st;
  const sm_slide *s = &d->s[i];
  int C = m->C;
  size_t want = (size_t)(s->n ? s->n : 1) * (size_t)C;
  if (m->bag_cap < want) {
    float *p = realloc(m->bag, sizeof *p * want);
    if (!p)
      return nic_err(err, NIC_ENOMEM, "out of memory for a bag of %lld instances", (long long)s->n);
    m->bag = p;
    m->bag_cap = want;
  }
  int64_t q = 0;
  for (int64_t k = 0; k < s->n; k++) {
    if (keep && !keep[k]) continue;
    const float *v = rows + k * C;
    float *dst = m->bag + q * C;
    for (int c = 0; c < C; c++) dst[c] = (v[c] - m->mean[c]) * m->istd[c];
    q++;
  }
  *n = q;
  return NIC_OK;
}

/* CNN: the T test crops in fixed chunks, probabilities (or outputs) averaged. */
static nic_status predict_cnn(nic_slidemodel *m, nic_ctx *ctx, sm_data *d, int i, double *acc,
                              nic_error *err) {
  int R = m->crop, C = m->C, T = m->test_crops;
  int64_t per = (int64_t)C * R * R;
  int chunk = (int)(SM_PREDICT_BATCH_BYTES / (per * (int64_t)sizeof(float)));
  if (chunk < 1) chunk = 1;
  if (chunk > T) chunk = T;
  nic_status st = NIC_OK;
  for (int t0 = 0; t0 < T && st == NIC_OK; t0 += chunk) {
    int b = T - t0 < chunk ? T - t0 : chunk;
    if ((st = nic_tensor_alloc4(&m->x, b, C, R, R, err)) != NIC_OK) break;
    for (int j = 0; j < b && st == NIC_OK; j++) {
      int t = t0 + j, o = sm_test_orientation(t, T);
      nic_rng r;
      nic_rng_seed(&r, sm_mix(m->seed ^ sm_mix(0x7e57c0deull + (uint64_t)t)));
      sm_crop cr;
      sm_crop_choose(&d->s[i], R, o, 0, 0, &r, &cr);
      const float *rows = NULL;
      if ((st = sm_rows(d, i, o, &rows, err)) == NIC_OK)
        sm_crop_place(&d->s[i], rows, C, m->mean, m->istd, R, &cr, m->x.data + j * per);
    }
    const nic_tensor *y = NULL;
    if (st == NIC_OK) st = nic_model_forward(m->net, ctx, &m->x, 0, &y, err);
    for (int j = 0; j < b && st == NIC_OK; j++) sm_model_accumulate(m, y->data + j * m->nout, acc);
  }
  return st;
}

/* ABMIL: one bag per orientation the slide has (only the plain features
 * when it has none: every "orientation" would be the same bag). */
static nic_status predict_abmil(nic_slidemodel *m, nic_ctx *ctx, sm_data *d, int i, double *acc,
                                int *count, nic_error *err) {
  int T = sm_rows_orientation(d, i, 1) ? m->test_crops : 1;
  float y[SM_ABMIL_MAX_DIM];
  m->ab.threads = nic_ctx_threads(ctx);
  nic_status st = NIC_OK;
  for (int t = 0; t < T && st == NIC_OK; t++) {
    int64_t n = 0;
    st = sm_model_bag(m, d, i, sm_test_orientation(t, T), NULL, &n, err);
    if (st == NIC_OK && n == 0) st = nic_err(err, NIC_EINVAL, "%s: no tissue cell", d->s[i].path);
    if (st == NIC_OK) st = sm_abmil_forward(&m->ab, m->bag, n, y, NULL, err);
    if (st == NIC_OK) sm_model_accumulate(m, y, acc);
  }
  *count = T;
  return st;
}

nic_status sm_model_predict(nic_slidemodel *m, nic_ctx *ctx, sm_data *d, int i, double *scores,
                            nic_error *err) {
  double acc[SM_ABMIL_MAX_DIM] = {0};
  int count = m->test_crops;
  nic_status st = m->kind != NIC_SM_ABMIL ? predict_cnn(m, ctx, d, i, acc, err)
                                          : predict_abmil(m, ctx, d, i, acc, &count, err);
  if (st != NIC_OK) return st;
  for (int c = 0; c < m->nout; c++) acc[c] /= count;
  if (m->task == NIC_TASK_BINARY)
    scores[0] = acc[1];
  else if (m->task == NIC_TASK_MULTICLASS)
    memcpy(scores, acc, sizeof(double) * (size_t)m->K);
  else if (m->task == NIC_TASK_REGRESSION)
    scores[0] = acc[0] * m->y_sd + m->y_mean;
  else
    scores[0] = acc[0] - m->risk_offset;
  return NIC_OK;
}

nic_status nic_sm_predict(nic_slidemodel *m, nic_ctx *ctx, const char *path, double *scores,
                          nic_error *err) {
  sm_data d;
  nic_status st = sm_data_open(&d, &path, 1, m->use_or, INT64_MAX, err);
  if (st != NIC_OK) return st;
  if (d.C != m->C)
    st = nic_err(err, NIC_EINVAL, "%s: embeddings have %d values, the model takes %d", path, d.C,
                 m->C);
  if (st == NIC_OK) st = sm_model_predict(m, ctx, &d, 0, scores, err);
  sm_data_free(&d);
  return st;
}
