/* Grid k-nearest-neighbour search and the spectral (graph Laplacian) scores of SUNDAE pruning,
   plus the exact nearest-point query of merge's survivor assignment. Called through ctypes from
   sundae_compress/prune/graph.py (see its module notes for the algorithm); all functions work on
   caller-allocated numpy buffers and are thread-safe on disjoint output ranges. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include "radix.h"

/* Cell key (row major: z slowest, x fastest) of one point. */
static inline int64_t cell_of(const float *p, const double *lo, double inv_s, const int64_t *dims,
                              int64_t *c) {
    for (int a = 0; a < 3; a++) {
        double f = floor(((double)p[a] - lo[a]) * inv_s);
        int64_t v = (int64_t)f;
        if (f < 0) v = 0;
        if (v > dims[a] - 1) v = dims[a] - 1;
        c[a] = v;
    }
    return (c[2] * dims[1] + c[1]) * dims[0] + c[0];
}


/* Radix-sort the points by cell. Writes perm (sorted position -> original index), the sorted
   points, the sorted unique cell keys and cell starts (cell_start[m] = first sorted position of
   cell m, cell_start[M] = n). Returns M, or -1 when out of memory. */
int64_t grid_build(const float *pts, int64_t n, const double *lo, double inv_s, const int64_t *dims,
                   int nbits, int32_t *perm, float *spts, int64_t *cell_keys, int64_t *cell_start) {
    uint64_t *ka = malloc(sizeof(uint64_t) * n), *kb = malloc(sizeof(uint64_t) * n);
    int32_t *ib = malloc(sizeof(int32_t) * n);
    /* as few passes as possible with digits of <= 14 bits (a 128 KiB histogram) */
    const int npass = (nbits + 13) / 14, D = npass ? (nbits + npass - 1) / npass : 1, B = 1 << D;
    int64_t *hist = malloc(sizeof(int64_t) * B);
    if (!ka || !kb || !ib || !hist) { free(ka); free(kb); free(ib); free(hist); return -1; }
    int64_t c[3];
    for (int64_t i = 0; i < n; i++) { ka[i] = (uint64_t)cell_of(pts + 3 * i, lo, inv_s, dims, c); perm[i] = (int32_t)i; }
    uint64_t *ks = ka;
    RADIX_SORT(int32_t, ka, kb, perm, ib, n, nbits, D, hist, ks);
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        const float *p = pts + 3 * (int64_t)perm[i];
        spts[3 * i] = p[0]; spts[3 * i + 1] = p[1]; spts[3 * i + 2] = p[2];
        if (i == 0 || ks[i] != ks[i - 1]) { cell_keys[m] = (int64_t)ks[i]; cell_start[m] = i; m++; }
    }
    cell_start[m] = n;
    free(ka); free(kb); free(ib); free(hist);
    return m;
}

typedef struct {
    const float *pts; const int64_t *keys; const int64_t *start; int64_t m;
    const int64_t *dims; const double *lo; double s; int k;
} grid_t;

static inline int64_t lower_bound(const int64_t *a, int64_t lo, int64_t hi, int64_t key) {
    while (lo < hi) { int64_t mid = (lo + hi) >> 1; if (a[mid] < key) lo = mid + 1; else hi = mid; }
    return lo;
}

/* insert candidate j (squared distance d) into the sorted top-k list */
static inline void consider(float d, int32_t j, float *bd, int32_t *bi, int *cnt, int k) {
    int c = *cnt;
    if (c == k && (d > bd[k - 1] || (d == bd[k - 1] && j > bi[k - 1]))) return;
    int pos = c < k ? c : k - 1;
    while (pos > 0 && (bd[pos - 1] > d || (bd[pos - 1] == d && bi[pos - 1] > j))) {
        bd[pos] = bd[pos - 1]; bi[pos] = bi[pos - 1]; pos--;
    }
    bd[pos] = d; bi[pos] = j;
    if (c < k) *cnt = c + 1;
}

static inline void scan(const grid_t *g, int64_t i, int64_t a, int64_t b, float *bd, int32_t *bi, int *cnt) {
    const float *p = g->pts + 3 * i;
    const float px = p[0], py = p[1], pz = p[2];
    const int k = g->k;
    int c = *cnt;
    float bound = c < k ? INFINITY : bd[k - 1];
    for (int64_t j = a; j < b; j++) {
        const float *q = g->pts + 3 * j;
        float dx = px - q[0], dy = py - q[1], dz = pz - q[2];
        float d = dx * dx + dy * dy + dz * dz;
        if (d <= bound && j != i) {
            consider(d, (int32_t)j, bd, bi, &c, k);
            if (c == k) bound = bd[k - 1];
        }
    }
    *cnt = c;
}

#define RING_LIMIT 6

/* squared gap between coordinate p and cell index cc along axis a (0 inside the cell) */
static inline double gap2(const grid_t *g, int a, double p, int64_t cc) {
    double lo = g->lo[a] + (double)cc * g->s;
    double t = 0.0;
    if (p < lo) t = lo - p;
    else if (p > lo + g->s) t = p - lo - g->s;
    t *= (1.0 - 1e-6);
    return t * t;
}

static inline int pruned(double gap, const float *bd, int cnt, int k) {
    return cnt == k && gap > (double)bd[k - 1];
}

/* scan cells [c0, c1) (all in one row, yz gap `gyz`) skipping cells that cannot improve */
static inline void scan_cells(const grid_t *g, int64_t i, int64_t c0, int64_t c1, double gyz,
                              float *bd, int32_t *bi, int *cnt) {
    double px = g->pts[3 * i];
    for (int64_t cc = c0; cc < c1; cc++) {
        if (pruned(gyz + gap2(g, 0, px, g->keys[cc] % g->dims[0]), bd, *cnt, g->k)) continue;
        scan(g, i, g->start[cc], g->start[cc + 1], bd, bi, cnt);
    }
}

/* cells x0..x1 of row (y, z), clipped to the grid, located by binary search */
static inline void scan_row(const grid_t *g, int64_t i, int64_t x0, int64_t x1, int64_t y, int64_t z,
                            float *bd, int32_t *bi, int *cnt) {
    if (y < 0 || z < 0 || y >= g->dims[1] || z >= g->dims[2]) return;
    double gyz = gap2(g, 1, g->pts[3 * i + 1], y) + gap2(g, 2, g->pts[3 * i + 2], z);
    if (pruned(gyz, bd, *cnt, g->k)) return;
    if (x0 < 0) x0 = 0;
    if (x1 > g->dims[0] - 1) x1 = g->dims[0] - 1;
    if (x0 > x1) return;
    int64_t base = (z * g->dims[1] + y) * g->dims[0];
    int64_t c0 = lower_bound(g->keys, 0, g->m, base + x0);
    int64_t c1 = lower_bound(g->keys, c0, g->m, base + x1 + 1);
    scan_cells(g, i, c0, c1, gyz, bd, bi, cnt);
}

/* distance from point i (in cell c) to the outside of the block of radius R; +inf where the
   block reaches the edge of the grid */
static inline double margin(const grid_t *g, int64_t i, const int64_t *c, int64_t R) {
    double m = INFINITY;
    for (int a = 0; a < 3; a++) {
        double p = g->pts[3 * i + a];
        if (c[a] - R > 0) { double t = p - (g->lo[a] + (double)(c[a] - R) * g->s); if (t < m) m = t; }
        if (c[a] + R < g->dims[a] - 1) { double t = g->lo[a] + (double)(c[a] + R + 1) * g->s - p; if (t < m) m = t; }
    }
    return m * (1.0 - 1e-6) - 1e-30;
}

/* Grow the block from radius R (already scanned) until the k-th distance is inside it or the
   block covers `cap`. Cells farther than the current k-th distance are skipped. */
static int grow(const grid_t *g, int64_t i, const int64_t *c, int64_t R, double cap,
                float *bd, int32_t *bi, int *cnt) {
    int64_t maxR = g->dims[0];
    if (g->dims[1] > maxR) maxR = g->dims[1];
    if (g->dims[2] > maxR) maxR = g->dims[2];
    for (;;) {
        double mg = margin(g, i, c, R);
        if (*cnt == g->k && (double)bd[g->k - 1] <= mg * mg) return 1;
        if (mg >= cap || R >= maxR) return 1;
        if (R >= RING_LIMIT) return 0;  /* too far for this grid: retried on a coarser one */
        R++;
        for (int64_t dz = -R; dz <= R; dz++)
            for (int64_t dy = -R; dy <= R; dy++) {
                if (dz == -R || dz == R || dy == -R || dy == R)
                    scan_row(g, i, c[0] - R, c[0] + R, c[1] + dy, c[2] + dz, bd, bi, cnt);
                else {
                    scan_row(g, i, c[0] - R, c[0] - R, c[1] + dy, c[2] + dz, bd, bi, cnt);
                    scan_row(g, i, c[0] + R, c[0] + R, c[1] + dy, c[2] + dz, bd, bi, cnt);
                }
            }
    }
}

static void finish(const grid_t *g, int64_t i, const float *bd, const int32_t *bi, int cnt,
                   int32_t *nbr, float *d2) {
    for (int t = 0; t < g->k; t++) {
        nbr[i * g->k + t] = t < cnt ? bi[t] : -1;
        d2[i * g->k + t] = t < cnt ? bd[t] : INFINITY;
    }
}

/* ---- cell-batched kNN: the candidates of a cell's 3x3x3 (then 5x5x5) block are gathered once
   into SoA buffers; every point of the cell computes all its distances in one vectorisable loop
   and keeps the k best (insertion with an early bound). ---- */
typedef struct { float *x, *y, *z, *d; int32_t *j, *sel; int64_t n, cap; } buf_t;
#ifdef __SSE2__
#include <emmintrin.h>
/* set-bit positions of a 4-bit mask (padded with 0) and their count */
static const int8_t SEL_LUT[16][5] = {
    {0, 0, 0, 0, 0}, {0, 0, 0, 0, 1}, {1, 0, 0, 0, 1}, {0, 1, 0, 0, 2}, {2, 0, 0, 0, 1}, {0, 2, 0, 0, 2},
    {1, 2, 0, 0, 2}, {0, 1, 2, 0, 3}, {3, 0, 0, 0, 1}, {0, 3, 0, 0, 2}, {1, 3, 0, 0, 2}, {0, 1, 3, 0, 3},
    {2, 3, 0, 0, 2}, {0, 2, 3, 0, 3}, {1, 2, 3, 0, 3}, {0, 1, 2, 3, 4}};
#endif
#define NPREV 6
#define GUESS_FACTOR 1.15

static int buf_reserve(buf_t *b, int64_t need) {
    if (need <= b->cap) return 1;
    int64_t c = b->cap ? b->cap : 256;
    while (c < need) c *= 2;
    float *x = realloc(b->x, sizeof(float) * c); if (x) b->x = x;
    float *y = realloc(b->y, sizeof(float) * c); if (y) b->y = y;
    float *z = realloc(b->z, sizeof(float) * c); if (z) b->z = z;
    float *d = realloc(b->d, sizeof(float) * c); if (d) b->d = d;
    int32_t *j = realloc(b->j, sizeof(int32_t) * c); if (j) b->j = j;
    int32_t *sl = realloc(b->sel, sizeof(int32_t) * (c + 4)); if (sl) b->sel = sl;
    if (!x || !y || !z || !d || !j || !sl) return 0;
    b->cap = c;
    return 1;
}

static int buf_add(buf_t *b, const float *pts, int64_t a, int64_t e) {
    if (!buf_reserve(b, b->n + (e - a))) return 0;
    for (int64_t j = a; j < e; j++) {
        b->x[b->n] = pts[3 * j]; b->y[b->n] = pts[3 * j + 1]; b->z[b->n] = pts[3 * j + 2];
        b->j[b->n] = (int32_t)j; b->n++;
    }
    return 1;
}

/* `pre` is an upper bound on the k-th distance known in advance (INFINITY if none): candidates
   beyond it are skipped without touching the list. */
static inline void buf_scan2(buf_t *b, int64_t i, float px, float py, float pz, float *bd, int32_t *bi,
                             int *cnt, int k, float pre, float above);
static inline void buf_scan(buf_t *b, int64_t i, float px, float py, float pz, float *bd, int32_t *bi,
                            int *cnt, int k, float pre) {
    buf_scan2(b, i, px, py, pz, bd, bi, cnt, k, pre, -1.0f);
}

/* buf_scan skipping the candidates at squared distance <= `above` (already considered) */
static inline void buf_scan2(buf_t *b, int64_t i, float px, float py, float pz, float *bd, int32_t *bi,
                             int *cnt, int k, float pre, float above) {
    const int64_t n = b->n;
    const float *X = b->x, *Y = b->y, *Z = b->z;
    float *D = b->d;
    for (int64_t t = 0; t < n; t++) {
        float dx = px - X[t], dy = py - Y[t], dz = pz - Z[t];
        D[t] = dx * dx + dy * dy + dz * dz;
    }
    int c = *cnt;
    float bound = c < k ? pre : (bd[k - 1] < pre ? bd[k - 1] : pre);
    /* branch-free compaction of the candidates within the bound, then the (short) insertion pass */
    int32_t *S = b->sel;
    int64_t ms = 0;
    int64_t t0 = 0;
#ifdef __SSE2__
    /* 4 at a time: compare mask -> positions from a table (S has 4 spare slots) */
    {
        const __m128 vb = _mm_set1_ps(bound), va = _mm_set1_ps(above);
        for (; t0 + 4 <= n; t0 += 4) {
            __m128 d = _mm_loadu_ps(D + t0);
            __m128 m = _mm_cmple_ps(d, vb);
            if (above >= 0) m = _mm_and_ps(m, _mm_cmpgt_ps(d, va));
            int mk = _mm_movemask_ps(m);
            const int8_t *l = SEL_LUT[mk];
            S[ms] = (int32_t)t0 + l[0]; S[ms + 1] = (int32_t)t0 + l[1];
            S[ms + 2] = (int32_t)t0 + l[2]; S[ms + 3] = (int32_t)t0 + l[3];
            ms += l[4];
        }
    }
#endif
    for (int64_t t = t0; t < n; t++) { S[ms] = (int32_t)t; ms += (D[t] <= bound) & (D[t] > above); }
    /* the list as 64-bit keys (distance bits, index): squared distances are >= 0, so their IEEE
       bits order like the values and one integer compare orders (d, j) lexicographically */
    uint64_t K[256];
    for (int t = 0; t < c; t++) { uint32_t u; memcpy(&u, &bd[t], 4); K[t] = ((uint64_t)u << 32) | (uint32_t)bi[t]; }
    uint64_t kb = UINT64_MAX;
    if (c == k && k > 0) kb = K[k - 1];
    { uint32_t u; memcpy(&u, &bound, 4); uint64_t pb = ((uint64_t)u << 32) | 0xffffffffu;
      if (bound != INFINITY && pb < kb) kb = pb; }
    for (int64_t q = 0; q < ms; q++) {
        int64_t t = S[q];
        uint32_t u; memcpy(&u, &D[t], 4);
        uint64_t key = ((uint64_t)u << 32) | (uint32_t)b->j[t];
        if (key >= kb || b->j[t] == (int32_t)i) continue;
        int pos = c < k ? c : k - 1;
        while (pos > 0 && K[pos - 1] > key) { K[pos] = K[pos - 1]; pos--; }
        K[pos] = key;
        if (c < k) c++;
        if (c == k && K[k - 1] < kb) kb = K[k - 1];
    }
    for (int t = 0; t < c; t++) { uint32_t u = (uint32_t)(K[t] >> 32); memcpy(&bd[t], &u, 4); bi[t] = (int32_t)(K[t] & 0xffffffffu); }
    *cnt = c;
}

/* |x_i - x_p| + (k-th distance found for a previous point p) bounds the k-th distance of i
   (p's k points, plus p itself, lie in that ball): the smallest over the remembered points,
   squared and padded for rounding; +inf if none */
static inline float prev_bound(float px, float py, float pz, const double *hk, const double *hx,
                               const double *hy, const double *hz, int nprev) {
    double rbest = INFINITY;
    for (int h = 0; h < nprev; h++) {
        double ex = (double)px - hx[h], ey = (double)py - hy[h], ez = (double)pz - hz[h];
        double r = hk[h] + sqrt(ex * ex + ey * ey + ez * ez);
        if (r < rbest) rbest = r;
    }
    double bb = rbest * rbest * (1.0 + 1e-5) + 1e-37;
    return bb < 3e38 ? (float)bb : INFINITY;
}

int knn_cells(const float *pts, const int64_t *keys, const int64_t *start, int64_t m,
               const int64_t *dims, const double *lo, double s, int k, double cap,
               int64_t m0, int64_t m1, int32_t *nbr, float *d2, int8_t *ok) {
    grid_t G = {pts, keys, start, m, dims, lo, s, k};
    const grid_t *g = &G;
    float bd[256]; int32_t bi[256];
    int64_t cur[25], ca[25], cb[25], rbase[25];
    buf_t B1 = {0}, B2 = {0};
    int first = 1, okmem = 1, nprev = 0, hpos = 0;
    double hk[NPREV], hx[NPREV], hy[NPREV], hz[NPREV];
    for (int64_t cm = m0; cm < m1 && okmem; cm++) {
        int64_t key = keys[cm], c[3];
        c[0] = key % dims[0]; c[1] = (key / dims[0]) % dims[1]; c[2] = key / (dims[0] * dims[1]);
        int64_t x0 = c[0] > 1 ? c[0] - 2 : 0, x1 = c[0] + 2 < dims[0] ? c[0] + 2 : dims[0] - 1;
        for (int r = 0; r < 25; r++) {
            int64_t y = c[1] + r % 5 - 2, z = c[2] + r / 5 - 2;
            int64_t base = (z * dims[1] + y) * dims[0];
            if (first) cur[r] = lower_bound(keys, 0, m, base + x0);
            while (cur[r] < m && keys[cur[r]] < base + x0) cur[r]++;
            int64_t e = cur[r];
            while (e < m && keys[e] <= base + x1) e++;
            rbase[r] = base;
            if (y < 0 || z < 0 || y >= dims[1] || z >= dims[2]) { ca[r] = cb[r] = 0; continue; }
            ca[r] = cur[r]; cb[r] = e;
        }
        first = 0;
        /* 3x3x3 block, own cell first (a good bound early) */
        B1.n = 0;
        okmem &= buf_add(&B1, pts, start[cm], start[cm + 1]);
        for (int r = 0; r < 25; r++) {
            int dy = r % 5 - 2, dz = r / 5 - 2;
            if (dy < -1 || dy > 1 || dz < -1 || dz > 1) continue;
            for (int64_t cc = ca[r]; cc < cb[r]; cc++) {
                int64_t dx = keys[cc] - rbase[r] - c[0];
                if (dx < -1 || dx > 1 || cc == cm) continue;
                okmem &= buf_add(&B1, pts, start[cc], start[cc + 1]);
            }
        }
        int shell_built = 0;
        for (int64_t i = start[cm]; i < start[cm + 1] && okmem; i++) {
            int cnt = 0, good = 1;
            const float px = pts[3 * i], py = pts[3 * i + 1], pz = pts[3 * i + 2];
            /* First an unproven guess (GUESS_FACTOR x the last point's k-th distance): if k
               candidates lie within it, the k best are among them. Else the proven bound `pre`
               (computed only then), else everything. A list with fewer than k entries holds every
               candidate within the bound used so far, so each retry only adds the ones beyond. */
            float guess = INFINITY, pre = INFINITY;
            if (nprev) {
                double r = hk[(hpos + NPREV - 1) % NPREV] * GUESS_FACTOR;
                if (r * r < 3e38) guess = (float)(r * r);
            }
            if (guess == INFINITY) pre = prev_bound(px, py, pz, hk, hx, hy, hz, nprev);
            float done = guess != INFINITY ? guess : pre;
            buf_scan(&B1, i, px, py, pz, bd, bi, &cnt, k, done);
            if (cnt < k && guess != INFINITY) {
                pre = prev_bound(px, py, pz, hk, hx, hy, hz, nprev);
                if (pre > guess) { buf_scan2(&B1, i, px, py, pz, bd, bi, &cnt, k, pre, guess); done = pre; }
            }
            if (cnt < k && done != INFINITY) buf_scan2(&B1, i, px, py, pz, bd, bi, &cnt, k, INFINITY, done);
            double mg = margin(g, i, c, 1);
            if (!((cnt == k && (double)bd[k - 1] <= mg * mg) || mg >= cap)) {
                if (!shell_built) {
                    B2.n = 0;
                    for (int r = 0; r < 25; r++) {
                        int dy = r % 5 - 2, dz = r / 5 - 2;
                        int inner = dy >= -1 && dy <= 1 && dz >= -1 && dz <= 1;
                        for (int64_t cc = ca[r]; cc < cb[r]; cc++) {
                            int64_t dx = keys[cc] - rbase[r] - c[0];
                            if (inner && dx >= -1 && dx <= 1) continue;
                            okmem &= buf_add(&B2, pts, start[cc], start[cc + 1]);
                        }
                    }
                    shell_built = 1;
                }
                buf_scan(&B2, i, px, py, pz, bd, bi, &cnt, k, INFINITY);
                good = grow(g, i, c, 2, cap, bd, bi, &cnt);
            }
            if (cnt == k && isfinite(bd[k - 1])) {  /* remember the last NPREV points' k-th distances */
                hk[hpos] = sqrt((double)bd[k - 1]); hx[hpos] = px; hy[hpos] = py; hz[hpos] = pz;
                hpos = (hpos + 1) % NPREV;
                if (nprev < NPREV) nprev++;
            }
            finish(g, i, bd, bi, cnt, nbr, d2);
            ok[i] = (int8_t)good;
        }
    }
    free(B1.x); free(B1.y); free(B1.z); free(B1.d); free(B1.j); free(B1.sel);
    free(B2.x); free(B2.y); free(B2.z); free(B2.d); free(B2.j); free(B2.sel);
    return okmem ? 0 : -1;
}

/* Search the listed points (sorted positions) exactly up to `cap`; row w of the outputs is for
   which[w]; ok[w] = 0 where the ring limit stopped the search. */
void knn_points(const float *pts, const int64_t *keys, const int64_t *start, int64_t m,
                const int64_t *dims, const double *lo, double s, int k, double cap,
                const int64_t *which, int64_t nw, int32_t *nbr, float *d2, int8_t *ok) {
    grid_t G = {pts, keys, start, m, dims, lo, s, k};
    const grid_t *g = &G;
    float bd[256]; int32_t bi[256];
    double inv_s = 1.0 / s;
    for (int64_t w = 0; w < nw; w++) {
        int64_t i = which[w], c[3];
        cell_of(pts + 3 * i, lo, inv_s, dims, c);
        int cnt = 0;
        for (int64_t dz = -1; dz <= 1; dz++)
            for (int64_t dy = -1; dy <= 1; dy++)
                scan_row(g, i, c[0] - 1, c[0] + 1, c[1] + dy, c[2] + dz, bd, bi, &cnt);
        ok[w] = (int8_t)grow(g, i, c, 1, cap, bd, bi, &cnt);
        for (int t = 0; t < k; t++) {
            nbr[w * k + t] = t < cnt ? bi[t] : -1;
            d2[w * k + t] = t < cnt ? bd[t] : INFINITY;
        }
    }
}

/* Sum of d, d^2 and count over edges with d2 <= thr2 for rows [a, b). Blocks of edges: the
   masked square roots in float (vectorised), the sums in double. */
void edge_stats(const float *d2, int64_t a, int64_t b, int k, double thr2, double *out) {
    float t1[1024], t2[1024];
    const float th = (float)thr2;
    double s1a = 0, s1b = 0, s2a = 0, s2b = 0;
    int64_t c = 0;
    for (int64_t e0 = a * k; e0 < b * k; e0 += 1024) {
        int64_t n = b * k - e0 < 1024 ? b * k - e0 : 1024;
        const float *v = d2 + e0;
        int cc = 0;
        for (int64_t t = 0; t < n; t++) {
            int m = v[t] <= th;
            t1[t] = m ? sqrtf(v[t]) : 0.0f;
            t2[t] = m ? v[t] : 0.0f;
            cc += m;
        }
        c += cc;
        int64_t t = 0;
        for (; t + 1 < n; t += 2) { s1a += t1[t]; s1b += t1[t + 1]; s2a += t2[t]; s2b += t2[t + 1]; }
        for (; t < n; t++) { s1a += t1[t]; s2a += t2[t]; }
    }
    out[0] = s1a + s1b; out[1] = s2a + s2b; out[2] = (double)c;
}

/* exp(x) for x <= 0 in float (vectorisable; relative error < 3e-7; 0 below -87) */
static inline float exp_neg(float x) {
    float xc = x < -87.0f ? -87.0f : x;
    float t = xc * 1.44269504088896341f;
    float j = (t + 12582912.0f) - 12582912.0f;  /* round to nearest */
    float f = t - j;                               /* in [-0.5, 0.5] */
    float p = 1.5403530393381609e-4f;
    p = p * f + 1.3333558146428443e-3f;
    p = p * f + 9.6181291076284772e-3f;
    p = p * f + 5.5504108664821580e-2f;
    p = p * f + 2.4022650695910071e-1f;
    p = p * f + 6.9314718055994531e-1f;
    p = p * f + 1.0f;
    int32_t bits = ((int32_t)j + 127) << 23;
    float sc; memcpy(&sc, &bits, 4);
    float r = p * sc;
    return x < -87.0f ? 0.0f : r;
}

/* score of rows [a, b): || sum_j w_ij (x_i - x_j) ||, w = exp(-d2 * inv2s2) (inv2s2 < 0: w = 1);
   edges with d2 > thr2 are removed (nbr set to -1, d2 to inf). The score of sorted row i is
   written to score[perm[i]] (perm NULL: score[i]). */
void laplace_scores(const float *pts, int32_t *nbr, float *d2, int64_t a, int64_t b, int k,
                    double thr2, double inv2s2, const int32_t *perm, float *score) {
    float w[1024];
    const float th = (float)thr2, ninv = (float)(-inv2s2);
    const int flat = !(inv2s2 >= 0);
    const int64_t rows = 1024 / k;
    for (int64_t i0 = a; i0 < b; i0 += rows) {
        const int64_t i1 = i0 + rows < b ? i0 + rows : b, ne = (i1 - i0) * k;
        const float *dd0 = d2 + i0 * k;
        /* the weights of a block of rows in one flat (vectorised) loop */
        if (flat) for (int64_t t = 0; t < ne; t++) w[t] = 1.0f;
        else for (int64_t t = 0; t < ne; t++) w[t] = exp_neg(dd0[t] * ninv);
        for (int64_t i = i0; i < i1; i++) {
            double hx = 0, hy = 0, hz = 0;
            const float *p = pts + 3 * i;
            int32_t *nb = nbr + i * k;
            float *dd = d2 + i * k;
            const float *wr = w + (i - i0) * k;
            for (int t = 0; t < k; t++) {
                int32_t j = nb[t];
                if (j < 0) continue;
                if (!(dd[t] <= th)) { nb[t] = -1; dd[t] = INFINITY; continue; }
                double wt = wr[t];
                const float *q = pts + 3 * (int64_t)j;
                hx += wt * ((double)p[0] - (double)q[0]);
                hy += wt * ((double)p[1] - (double)q[1]);
                hz += wt * ((double)p[2] - (double)q[2]);
            }
            score[perm ? perm[i] : i] = (float)sqrt(hx * hx + hy * hy + hz * hz);
        }
    }
}

/* per-axis min and max of points [a, b): out = (min x, min y, min z, max x, max y, max z) */
void minmax3(const float *pts, int64_t a, int64_t b, float *out) {
    float lo0 = INFINITY, lo1 = INFINITY, lo2 = INFINITY, hi0 = -INFINITY, hi1 = -INFINITY, hi2 = -INFINITY;
    for (int64_t i = a; i < b; i++) {
        float x = pts[3 * i], y = pts[3 * i + 1], z = pts[3 * i + 2];
        lo0 = x < lo0 ? x : lo0; lo1 = y < lo1 ? y : lo1; lo2 = z < lo2 ? z : lo2;
        hi0 = x > hi0 ? x : hi0; hi1 = y > hi1 ? y : hi1; hi2 = z > hi2 ? z : hi2;
    }
    out[0] = lo0; out[1] = lo1; out[2] = lo2; out[3] = hi0; out[4] = hi1; out[5] = hi2;
}

/* ---------------- nearest point (merge's survivor assignment) ---------------- */
/* one query: ring search from the query's cell, starting from the best (best, bj) found so far;
   returns 0 if the ring limit stopped it */
static int nn_one(const float *pts, const int64_t *keys, const int64_t *start, int64_t m,
                  const int64_t *dims, const double *lo, double s, const float *p, float *best_io,
                  int32_t *bj_io) {
    {
        const float px = p[0], py = p[1], pz = p[2];
        double inv_s = 1.0 / s;
        int64_t c[3];
        cell_of(p, lo, inv_s, dims, c);
        float best = *best_io; int32_t bj = *bj_io;
        int done = 0;
        for (int64_t R = 0; R <= 8 && !done; R++) {
            for (int64_t dz = -R; dz <= R; dz++) {
                int64_t z = c[2] + dz;
                if (z < 0 || z >= dims[2]) continue;
                double tz = 0, zl = lo[2] + (double)z * s;
                if (pz < zl) tz = zl - pz; else if (pz > zl + s) tz = pz - zl - s;
                tz *= (1.0 - 1e-6);
                for (int64_t dy = -R; dy <= R; dy++) {
                    int64_t y = c[1] + dy;
                    if (y < 0 || y >= dims[1]) continue;
                    double ty = 0, yl = lo[1] + (double)y * s;
                    if (py < yl) ty = yl - py; else if (py > yl + s) ty = py - yl - s;
                    ty *= (1.0 - 1e-6);
                    double gyz = tz * tz + ty * ty;
                    if (gyz > (double)best) continue;
                    int shell = (dz == -R || dz == R || dy == -R || dy == R);
                    int64_t xs[2] = {c[0] - R, c[0] + R};
                    int nseg = shell ? 1 : (R == 0 ? 1 : 2);
                    for (int sg = 0; sg < nseg; sg++) {
                        int64_t x0 = shell ? c[0] - R : xs[sg], x1 = shell ? c[0] + R : xs[sg];
                        if (x0 < 0) x0 = 0;
                        if (x1 > dims[0] - 1) x1 = dims[0] - 1;
                        if (x0 > x1) continue;
                        int64_t base = (z * dims[1] + y) * dims[0];
                        int64_t c0 = lower_bound(keys, 0, m, base + x0);
                        for (int64_t cc = c0; cc < m && keys[cc] <= base + x1; cc++) {
                            int64_t x = keys[cc] - base;
                            double tx = 0, xl = lo[0] + (double)x * s;
                            if (px < xl) tx = xl - px; else if (px > xl + s) tx = px - xl - s;
                            tx *= (1.0 - 1e-6);
                            if (gyz + tx * tx > (double)best) continue;
                            for (int64_t j = start[cc]; j < start[cc + 1]; j++) {
                                const float *r = pts + 3 * j;
                                float ex = px - r[0], ey = py - r[1], ez = pz - r[2];
                                float d = ex * ex + ey * ey + ez * ez;
                                if (d < best || (d == best && (int32_t)j < bj)) { best = d; bj = (int32_t)j; }
                            }
                        }
                    }
                }
            }
            /* margin of the block of radius R */
            double mg = INFINITY;
            for (int a = 0; a < 3; a++) {
                double pa = p[a];
                if (c[a] - R > 0) { double t = pa - (lo[a] + (double)(c[a] - R) * s); if (t < mg) mg = t; }
                if (c[a] + R < dims[a] - 1) { double t = lo[a] + (double)(c[a] + R + 1) * s - pa; if (t < mg) mg = t; }
            }
            mg = mg * (1.0 - 1e-6) - 1e-30;
            if (mg == INFINITY || (bj >= 0 && (double)best <= mg * mg && mg > 0)) done = 1;
        }
        *best_io = best; *bj_io = bj;
        return done;
    }
}

/* nn_query for queries sorted by cell of the same grid: the 3x3x3 block of a cell is gathered
   once (SoA) for all its queries; queries whose nearest point is not proven inside the block
   continue with the ring search of nn_one. */
int nn_query_sorted(const float *pts, const int64_t *keys, const int64_t *start, int64_t m,
                    const int64_t *dims, const double *lo, double s, const float *q, int64_t nq,
                    int32_t *out, float *outd) {
    buf_t B = {0};
    int64_t curkey = -1, c[3] = {0, 0, 0};
    double inv_s = 1.0 / s;
    int okmem = 1;
    for (int64_t w = 0; w < nq && okmem; w++) {
        const float *p = q + 3 * w;
        int64_t cq[3];
        int64_t key = cell_of(p, lo, inv_s, dims, cq);
        if (key != curkey) {
            curkey = key; c[0] = cq[0]; c[1] = cq[1]; c[2] = cq[2];
            B.n = 0;
            for (int64_t dz = -1; dz <= 1; dz++)
                for (int64_t dy = -1; dy <= 1; dy++) {
                    int64_t y = c[1] + dy, z = c[2] + dz;
                    if (y < 0 || z < 0 || y >= dims[1] || z >= dims[2]) continue;
                    int64_t x0 = c[0] > 0 ? c[0] - 1 : 0, x1 = c[0] + 1 < dims[0] ? c[0] + 1 : dims[0] - 1;
                    int64_t base = (z * dims[1] + y) * dims[0];
                    int64_t c0 = lower_bound(keys, 0, m, base + x0);
                    int64_t c1 = c0;
                    while (c1 < m && keys[c1] <= base + x1) c1++;
                    if (c1 > c0) okmem &= buf_add(&B, pts, start[c0], start[c1]);
                }
        }
        const float px = p[0], py = p[1], pz = p[2];
        float best = INFINITY; int32_t bj = -1;
        for (int64_t t = 0; t < B.n; t++) {
            float dx = px - B.x[t], dy = py - B.y[t], dz = pz - B.z[t];
            B.d[t] = dx * dx + dy * dy + dz * dz;
        }
        for (int64_t t = 0; t < B.n; t++) {
            float d = B.d[t];
            if (d < best || (d == best && B.j[t] < bj)) { best = d; bj = B.j[t]; }
        }
        /* margin of the 3x3x3 block */
        double mg = INFINITY;
        for (int a = 0; a < 3; a++) {
            double pa = p[a];
            if (c[a] - 1 > 0) { double t = pa - (lo[a] + (double)(c[a] - 1) * s); if (t < mg) mg = t; }
            if (c[a] + 1 < dims[a] - 1) { double t = lo[a] + (double)(c[a] + 2) * s - pa; if (t < mg) mg = t; }
        }
        mg = mg * (1.0 - 1e-6) - 1e-30;
        int done = mg == INFINITY || (bj >= 0 && mg > 0 && (double)best <= mg * mg);
        if (!done) done = nn_one(pts, keys, start, m, dims, lo, s, p, &best, &bj);
        out[w] = done ? bj : -1;
        outd[w] = best;
    }
    free(B.x); free(B.y); free(B.z); free(B.d); free(B.j); free(B.sel);
    return okmem ? 0 : -1;
}
