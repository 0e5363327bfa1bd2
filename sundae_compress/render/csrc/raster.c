/* Tile-based CPU compositor of projected Gaussians (see sundae_compress/render/native.py for the
   Python side and sundae_compress/render/rasterize.py for the torch reference it must agree with).

   Inputs shared by all functions:
     P     (V, 6) float32 rows: mean x, mean y, conic a, b, c, opacity, V Gaussians in front-to-back
           order; alpha at pixel centre (x+0.5, y+0.5) is
           min(0.99, opacity * exp(-0.5 (a dx^2 + c dy^2) - b dx dy)), dropped below 1/255.
     bbox  (V, 4) int64 x0, x1, y0, y1: half-open pixel ranges of the alpha >= 1/255 ellipses.
     vals  (V, C1) float32 values to blend (the caller appends a column of ones for the alpha).
   The image is cut into tile x tile squares; raster_bin lists, for every tile, the Gaussians whose
   ellipse can reach one of its pixel centres, in the global (front-to-back) order. Each tile row
   then walks its tile's list front to back, visiting for every Gaussian only the pixels of its
   exact alpha >= 1/255 row span (the torch path's candidate pairs, same float64 arithmetic):
   transmittance T in double per pixel, a pair counts while the transmittance in front of it is
   > T_MIN (where the product is within rounding of T_MIN, decided like the torch path on the sum
   of float32 log1p(-alpha)), weights alpha * T. Tiles are independent: raster_forward /
   raster_backward take their tiles from a shared counter so that the caller can run several
   threads, each with its own outputs (forward: disjoint pixels; backward: one gradient buffer
   per thread).

   The arithmetic of alpha is the torch path's, in float32 and in the same order (compile with
   -ffp-contract=off so that no fused multiply-add changes the rounding). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ALPHA_MAX 0.99f
#define ALPHA_MINF ((float)(1.0 / 255.0))
#define T_MIN 1e-4

static inline double k2_of(float op) {
    double k2 = 2.0 * log((double)op * 255.0);
    return k2 > 0.0 ? k2 : 0.0;
}

/* Lowest value of the quadratic form q(d) = a dx^2 + 2 b dx dy + c dy^2 (positive definite) over
   the rectangle dx in [x0, x1], dy in [y0, y1]. */
static double rect_min(double a, double b, double c, double x0, double x1, double y0, double y1) {
    if (x0 <= 0.0 && x1 >= 0.0 && y0 <= 0.0 && y1 >= 0.0) return 0.0;
    double best = INFINITY;
    double ys[2] = {y0, y1}, xs[2] = {x0, x1};
    for (int i = 0; i < 2; i++) {  /* horizontal edges: dy fixed, best dx = -b dy / a, clamped */
        double dy = ys[i], dx = -b * dy / a;
        dx = dx < x0 ? x0 : (dx > x1 ? x1 : dx);
        double q = a * dx * dx + 2.0 * b * dx * dy + c * dy * dy;
        if (q < best) best = q;
    }
    for (int i = 0; i < 2; i++) {  /* vertical edges */
        double dx = xs[i], dy = -b * dx / c;
        dy = dy < y0 ? y0 : (dy > y1 ? y1 : dy);
        double q = a * dx * dx + 2.0 * b * dx * dy + c * dy * dy;
        if (q < best) best = q;
    }
    return best;
}

/* Upper bound of the number of (tile, Gaussian) entries: the tiles of every bounding box. */
int64_t raster_bin_bound(const int64_t *bbox, int64_t V, int tile) {
    int64_t n = 0;
    for (int64_t g = 0; g < V; g++) {
        const int64_t *b = bbox + 4 * g;
        if (b[1] <= b[0] || b[3] <= b[2]) continue;
        n += ((b[1] - 1) / tile - b[0] / tile + 1) * ((b[3] - 1) / tile - b[2] / tile + 1);
    }
    return n;
}

/* Per-tile lists of Gaussians (CSR: off has ntiles + 1 entries, ids at least raster_bin_bound
   entries; flags is scratch of the same length). A tile is listed for a Gaussian when the
   Gaussian's alpha >= 1/255 ellipse (slightly widened) reaches one of the tile's pixel centres.
   Tiles are numbered row-major, tiles_x = ceil(W / tile). Returns the number of entries. */
int64_t raster_bin(const int64_t *bbox, const float *P, int64_t V, int W, int H, int tile,
                   uint8_t *flags, int64_t *off, int32_t *ids) {
    const int tx = (W + tile - 1) / tile, ty = (H + tile - 1) / tile;
    const int64_t nt = (int64_t)tx * ty;
    memset(off, 0, (size_t)(nt + 1) * sizeof(int64_t));
    int64_t f = 0;
    for (int64_t g = 0; g < V; g++) {
        const int64_t *b = bbox + 4 * g;
        if (b[1] <= b[0] || b[3] <= b[2]) continue;
        const float *p = P + 6 * g;
        const double mx = p[0], my = p[1], a = p[2], bb = p[3], c = p[4];
        const double lim = k2_of(p[5]) * (1.0 + 1e-5) + 1e-6;
        for (int64_t j = b[2] / tile; j <= (b[3] - 1) / tile; j++) {
            double y0 = (double)(j * tile) + 0.5 - my;
            double y1 = (double)((j + 1) * tile < H ? (j + 1) * tile : H) - 0.5 - my;
            for (int64_t i = b[0] / tile; i <= (b[1] - 1) / tile; i++) {
                double x0 = (double)(i * tile) + 0.5 - mx;
                double x1 = (double)((i + 1) * tile < W ? (i + 1) * tile : W) - 0.5 - mx;
                uint8_t hit = rect_min(a, bb, c, x0, x1, y0, y1) <= lim;
                flags[f++] = hit;
                off[j * tx + i + 1] += hit;
            }
        }
    }
    for (int64_t t = 0; t < nt; t++) off[t + 1] += off[t];
    /* second pass: scatter in Gaussian order, so every list stays front to back */
    int64_t *cur = (int64_t *)malloc((size_t)(nt > 0 ? nt : 1) * sizeof(int64_t));
    if (!cur) return -1;
    memcpy(cur, off, (size_t)nt * sizeof(int64_t));
    f = 0;
    for (int64_t g = 0; g < V; g++) {
        const int64_t *b = bbox + 4 * g;
        if (b[1] <= b[0] || b[3] <= b[2]) continue;
        for (int64_t j = b[2] / tile; j <= (b[3] - 1) / tile; j++)
            for (int64_t i = b[0] / tile; i <= (b[1] - 1) / tile; i++)
                if (flags[f++]) ids[cur[j * tx + i]++] = (int32_t)g;
    }
    free(cur);
    return off[nt];
}

/* One tile's Gaussians gathered into structure-of-arrays buffers. */
typedef struct {
    float *mx, *my, *a, *b, *c, *op;
    double *k2;
    int32_t *id, *y0, *y1;
    int64_t cap;
} tile_buf;

static void tb_free(tile_buf *t) {
    free(t->mx);
    free(t->k2);
    free(t->id);
}

static int tb_init(tile_buf *t, int64_t cap) {
    t->cap = cap > 0 ? cap : 1;
    t->mx = (float *)malloc((size_t)t->cap * 6 * sizeof(float));
    t->k2 = (double *)malloc((size_t)t->cap * sizeof(double));
    t->id = (int32_t *)malloc((size_t)t->cap * 3 * sizeof(int32_t));
    if (!t->mx || !t->k2 || !t->id) {
        tb_free(t);
        return -1;
    }
    t->my = t->mx + t->cap;
    t->a = t->my + t->cap;
    t->b = t->a + t->cap;
    t->c = t->b + t->cap;
    t->op = t->c + t->cap;
    t->y0 = t->id + t->cap;
    t->y1 = t->y0 + t->cap;
    return 0;
}

static void tb_fill(tile_buf *t, const int32_t *ids, int64_t n, const float *P, const int64_t *bbox) {
    for (int64_t k = 0; k < n; k++) {
        const int64_t g = ids[k];
        const float *p = P + 6 * g;
        t->id[k] = (int32_t)g;
        t->mx[k] = p[0];
        t->my[k] = p[1];
        t->a[k] = p[2];
        t->b[k] = p[3];
        t->c[k] = p[4];
        t->op[k] = p[5];
        t->k2[k] = k2_of(p[5]);
        t->y0[k] = (int32_t)bbox[4 * g + 2];
        t->y1[k] = (int32_t)bbox[4 * g + 3];
    }
}

static int64_t max_list(const int64_t *off, int64_t nt) {
    int64_t m = 0;
    for (int64_t t = 0; t < nt; t++)
        if (off[t + 1] - off[t] > m) m = off[t + 1] - off[t];
    return m;
}

/* Pixels [*xs, *xe) of row py (clipped to [x0, x1)) where entry k is a candidate: the torch path's
   exact alpha >= 1/255 ellipse span of that row, with the same float64 arithmetic (rows outside
   the bounding box have none). Returns 0 when the span is empty. */
static inline int row_span(const tile_buf *t, int64_t k, int py, int x0, int x1, int *xs, int *xe) {
    if (py < t->y0[k] || py >= t->y1[k]) return 0;
    const double dy = (double)py + 0.5 - (double)t->my[k];
    const double A = t->a[k], B = t->b[k], C = t->c[k];
    const double bd = B * dy;
    const double disc = bd * bd - A * (C * dy * dy - t->k2[k]);
    if (!(disc >= 0.0)) return 0;
    const double sq = sqrt(disc);
    const double mx = (double)t->mx[k];
    double s = ceil(mx + (-B * dy - sq) / A - 0.5);
    double e = floor(mx + (-B * dy + sq) / A - 0.5) + 1.0;
    s = s < (double)x0 ? (double)x0 : s;
    e = e > (double)x1 ? (double)x1 : e;
    if (!(e > s)) return 0;
    *xs = (int)s;
    *xe = (int)e;
    return 1;
}

/* Alpha of entry k at pixel centre (fx, fy) exactly as the torch path computes it (float32, same
   operation order): 0 when below 1/255. *raw gets the unclamped opacity * exp(power). */
static inline float pair_alpha(const tile_buf *t, int64_t k, float fx, float fy, float *raw, float *dxo,
                               float *dyo) {
    const float dx = fx - t->mx[k], dy = fy - t->my[k];
    const float power = (dx * dx * t->a[k] + dy * dy * t->c[k]) * -0.5f - dx * dy * t->b[k];
    const float r = expf(power) * t->op[k];
    const float alpha = r > ALPHA_MAX ? ALPHA_MAX : r;
    *raw = r;
    *dxo = dx;
    *dyo = dy;
    return alpha >= ALPHA_MINF ? alpha : 0.0f;
}

/* The next tile to process: threads share one counter (dynamic scheduling: tiles differ a lot in
   cost, and on a shared machine one thread may be descheduled for a while). */
static inline int64_t take(int64_t *next) { return __atomic_fetch_add(next, 1, __ATOMIC_RELAXED); }

/* The torch path's log-transmittance behind entry kend at pixel (px, py): the float64 sum of the
   float32 log1p(-alpha) of the pixel's counted pairs 0..kend. Only needed when the product
   transmittance is within rounding of T_MIN (the liveness test must decide like the torch path). */
static double exact_log_t(const tile_buf *t, int64_t kend, int px, int py) {
    double s = 0.0;
    const float fx = (float)px + 0.5f, fy = (float)py + 0.5f;
    for (int64_t k = 0; k <= kend; k++) {
        int xs, xe;
        if (!row_span(t, k, py, px, px + 1, &xs, &xe)) continue;
        float raw, dx, dy;
        const float alpha = pair_alpha(t, k, fx, fy, &raw, &dx, &dy);
        if (alpha != 0.0f) s += (double)log1pf(-alpha);
    }
    return s;
}

/* Forward blend of the tiles handed out by the shared counter *next (start it at 0): out (H*W, C1) float32 weighted sums (the
   tiles' pixels are overwritten), final_T (H*W) transmittance behind the last counted pair and
   ncontrib (H*W) one past the list position of that pair (both optional: NULL), nlive[0] += the
   number of counted pairs. Each tile row walks the tile's list front to back, visiting only the
   pixels of each Gaussian's row span, until all its pixels are saturated (T <= T_MIN). Returns
   0, or -1 when out of memory. */
int raster_forward(const int64_t *off, const int32_t *ids, const float *P, const int64_t *bbox,
                   const float *vals, int C1, int W, int H, int tile, int64_t *next, float *out,
                   double *final_T, int32_t *ncontrib, int64_t *nlive) {
    const int tx = (W + tile - 1) / tile, ty = (H + tile - 1) / tile;
    const int64_t nt = (int64_t)tx * ty;
    tile_buf tb;
    if (tb_init(&tb, max_list(off, nt)) != 0) return -1;
    /* per-pixel state of one tile row */
    double *acc = (double *)malloc((size_t)tile * (C1 + 2) * sizeof(double));
    int32_t *last = (int32_t *)malloc((size_t)tile * 2 * sizeof(int32_t));
    if (!acc || !last) {
        free(acc);
        free(last);
        tb_free(&tb);
        return -1;
    }
    double *T = acc + (size_t)tile * C1;
    int32_t *done = last + tile;
    /* liveness is decided on the product T, except within T_MIN (1 -+ 1e-4), where the product
       and the torch path's sum of float32 logs may disagree: there the exact sum decides */
    const double log_tmin = log(T_MIN), t_lo = T_MIN * (1.0 - 1e-4), t_hi = T_MIN * (1.0 + 1e-4);
    int64_t live = 0;
    for (int64_t t = take(next); t < nt; t = take(next)) {
        const int64_t n = off[t + 1] - off[t];
        tb_fill(&tb, ids + off[t], n, P, bbox);
        const int x0 = (int)(t % tx) * tile, y0 = (int)(t / tx) * tile;
        const int x1 = x0 + tile < W ? x0 + tile : W, y1 = y0 + tile < H ? y0 + tile : H;
        const int w = x1 - x0;
        for (int py = y0; py < y1; py++) {
            const float fy = (float)py + 0.5f;
            memset(acc, 0, (size_t)w * C1 * sizeof(double));
            for (int j = 0; j < w; j++) {
                T[j] = 1.0;
                last[j] = 0;
                done[j] = 0;
            }
            int ndone = 0;
            for (int64_t k = 0; k < n && ndone < w; k++) {
                int xs, xe;
                if (!row_span(&tb, k, py, x0, x1, &xs, &xe)) continue;
                const float *v = vals + (int64_t)tb.id[k] * C1;
                for (int px = xs; px < xe; px++) {
                    const int j = px - x0;
                    if (done[j]) continue;
                    float raw, dx, dy;
                    const float alpha = pair_alpha(&tb, k, (float)px + 0.5f, fy, &raw, &dx, &dy);
                    if (alpha == 0.0f) continue;
                    const double wt = (double)alpha * T[j];
                    double *a = acc + (size_t)j * C1;
                    for (int c = 0; c < C1; c++) a[c] += (double)v[c] * wt;
                    T[j] *= 1.0 - (double)alpha;
                    last[j] = (int32_t)(k + 1);
                    live++;
                    if (T[j] <= t_lo || (T[j] < t_hi && !(exact_log_t(&tb, k, px, py) > log_tmin))) {
                        /* T <= T_MIN: every later pair is dead */
                        done[j] = 1;
                        ndone++;
                    }
                }
            }
            for (int j = 0; j < w; j++) {
                const int64_t pix = (int64_t)py * W + x0 + j;
                for (int c = 0; c < C1; c++) out[pix * C1 + c] = (float)acc[(size_t)j * C1 + c];
                if (final_T) final_T[pix] = T[j];
                if (ncontrib) ncontrib[pix] = last[j];
            }
        }
    }
    free(acc);
    free(last);
    tb_free(&tb);
    if (nlive) nlive[0] += live;
    return 0;
}

/* Backward of raster_forward over the same tiles: gout (H*W, C1) float32 gradient of out;
   final_T / ncontrib from the forward. Walks each tile row's list back to front from its last
   contributor (standard 3DGS backward: dL/dv_i = alpha_i T_i g, dL/dalpha_i = T_i (v_i . g) -
   S_i / (1 - alpha_i) with S_i the sum of the later contributions (v_j . g) alpha_j T_j), then
   through alpha = min(0.99, opacity exp(power)) to opacity, mean and conic. Adds dL/dP into gP
   (V, 6) and dL/dvals into gvals (V, C1), float64 buffers owned by this call's thread. Returns 0,
   or -1 when out of memory. */
int raster_backward(const int64_t *off, const int32_t *ids, const float *P, const int64_t *bbox,
                    const float *vals, int C1, int W, int H, int tile, int64_t *next,
                    const float *gout, const double *final_T, const int32_t *ncontrib, double *gP,
                    double *gvals) {
    const int tx = (W + tile - 1) / tile, ty = (H + tile - 1) / tile;
    const int64_t nt = (int64_t)tx * ty;
    const int64_t cap = max_list(off, nt);
    tile_buf tb;
    if (tb_init(&tb, cap) != 0) return -1;
    /* per-tile gradient accumulators indexed by list position, flushed to gP / gvals per tile */
    double *lg = (double *)malloc((size_t)(cap > 0 ? cap : 1) * (6 + C1) * sizeof(double));
    double *T = (double *)malloc((size_t)tile * 2 * sizeof(double));
    if (!lg || !T) {
        free(lg);
        free(T);
        tb_free(&tb);
        return -1;
    }
    double *S = T + tile;
    for (int64_t t = take(next); t < nt; t = take(next)) {
        const int64_t n = off[t + 1] - off[t];
        if (n == 0) continue;
        tb_fill(&tb, ids + off[t], n, P, bbox);
        memset(lg, 0, (size_t)n * (6 + C1) * sizeof(double));
        const int x0 = (int)(t % tx) * tile, y0 = (int)(t / tx) * tile;
        const int x1 = x0 + tile < W ? x0 + tile : W, y1 = y0 + tile < H ? y0 + tile : H;
        const int w = x1 - x0;
        for (int py = y0; py < y1; py++) {
            const float fy = (float)py + 0.5f;
            const int32_t *lastr = ncontrib + (int64_t)py * W + x0;
            int32_t kmax = 0;
            for (int j = 0; j < w; j++) {
                T[j] = final_T[(int64_t)py * W + x0 + j];
                S[j] = 0.0;
                if (lastr[j] > kmax) kmax = lastr[j];
            }
            for (int64_t k = kmax - 1; k >= 0; k--) {
                int xs, xe;
                if (!row_span(&tb, k, py, x0, x1, &xs, &xe)) continue;
                const float *v = vals + (int64_t)tb.id[k] * C1;
                double *lk = lg + k * (6 + C1);
                for (int px = xs; px < xe; px++) {
                    const int j = px - x0;
                    if (k >= lastr[j]) continue;
                    float raw, dx, dy;
                    const float alpha = pair_alpha(&tb, k, (float)px + 0.5f, fy, &raw, &dx, &dy);
                    if (alpha == 0.0f) continue;
                    const float *g = gout + ((int64_t)py * W + px) * C1;
                    const double om = 1.0 - (double)alpha;
                    T[j] /= om;  /* transmittance in front of pair k */
                    const double wt = (double)alpha * T[j];
                    double vg = 0.0;
                    for (int c = 0; c < C1; c++) {
                        vg += (double)v[c] * (double)g[c];
                        lk[6 + c] += wt * (double)g[c];
                    }
                    const double dalpha = T[j] * vg - S[j] / om;
                    S[j] += vg * wt;
                    if (raw > ALPHA_MAX) continue;  /* clamped: no gradient to opacity or power */
                    const double dpow = dalpha * (double)raw;
                    const double ddx = (double)dx, ddy = (double)dy;
                    lk[0] += dpow * ((double)tb.a[k] * ddx + (double)tb.b[k] * ddy);
                    lk[1] += dpow * ((double)tb.c[k] * ddy + (double)tb.b[k] * ddx);
                    lk[2] += -0.5 * dpow * ddx * ddx;
                    lk[3] += -dpow * ddx * ddy;
                    lk[4] += -0.5 * dpow * ddy * ddy;
                    lk[5] += dalpha * (double)raw / (double)tb.op[k];
                }
            }
        }
        for (int64_t k = 0; k < n; k++) {
            const int64_t gid = tb.id[k];
            const double *lk = lg + k * (6 + C1);
            for (int j = 0; j < 6; j++) gP[gid * 6 + j] += lk[j];
            for (int c = 0; c < C1; c++) gvals[gid * C1 + c] += lk[6 + c];
        }
    }
    free(lg);
    free(T);
    tb_free(&tb);
    return 0;
}
