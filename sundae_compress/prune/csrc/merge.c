/* Merge / collapse helpers (see sundae_compress/prune/moments.py and collapse.py): covariances,
   group sums, 3x3 eigen-decompositions, edge costs, undirected kNN edges, a radix argsort and the
   greedy matching. Called through ctypes on caller-allocated numpy buffers. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include "radix.h"

/* rows [a, b): 6 covariance entries R diag(exp(2 s)) R^T from wxyz quaternions and log-scales */
void cov6_rows(const float *quats, const float *scales, int64_t a, int64_t b, double *out) {
    for (int64_t i = a; i < b; i++) {
        double w = quats[4 * i], x = quats[4 * i + 1], y = quats[4 * i + 2], z = quats[4 * i + 3];
        double nn = sqrt(w * w + x * x + y * y + z * z);
        if (nn < 1e-12) nn = 1e-12;
        w /= nn; x /= nn; y /= nn; z /= nn;
        double r[3][3] = {
            {1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)},
            {2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)},
            {2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)}};
        double v[3];
        for (int t = 0; t < 3; t++) v[t] = exp(2.0 * (double)scales[3 * i + t]);
        static const int I[6] = {0, 0, 0, 1, 1, 2}, J[6] = {0, 1, 2, 1, 2, 2};
        for (int c = 0; c < 6; c++) {
            const double *ri = r[I[c]], *rj = r[J[c]];
            out[6 * i + c] = ri[0] * rj[0] * v[0] + ri[1] * rj[1] * v[1] + ri[2] * rj[2] * v[2];
        }
    }
}

/* acc[g] += (w, w d, w (cov6 + d d^T)) with d = mean - anchor[g]; acc is (M, 10) */
void group_accum(const int64_t *group, int64_t n, const double *w, const float *means, const double *cov6,
                 const double *anchor, double *acc) {
    static const int I[6] = {0, 0, 0, 1, 1, 2}, J[6] = {0, 1, 2, 1, 2, 2};
    for (int64_t i = 0; i < n; i++) {
        int64_t g = group[i];
        double wi = w[i], d[3];
        for (int a = 0; a < 3; a++) d[a] = (double)means[3 * i + a] - anchor[3 * g + a];
        double *o = acc + 10 * g;
        o[0] += wi;
        o[1] += wi * d[0]; o[2] += wi * d[1]; o[3] += wi * d[2];
        for (int c = 0; c < 6; c++) o[4 + c] += wi * (cov6[6 * i + c] + d[I[c]] * d[J[c]]);
    }
}

/* symmetric 3x3 eigen-decomposition (cyclic Jacobi) of rows [a, b) of cov6: ascending eigenvalues
   val (M, 3) and eigenvectors as columns of vec (M, 3, 3), like numpy.linalg.eigh */
void eig3_rows(const double *cov6, int64_t a, int64_t b, double *val, double *vec) {
    for (int64_t r = a; r < b; r++) {
        const double *c = cov6 + 6 * r;
        double A[3][3] = {{c[0], c[1], c[2]}, {c[1], c[3], c[4]}, {c[2], c[4], c[5]}};
        for (int i = 0; i < 3; i++) for (int j = 0; j < 3; j++) if (!isfinite(A[i][j])) A[i][j] = 0.0;
        double V[3][3] = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}};
        for (int sweep = 0; sweep < 60; sweep++) {
            double off = A[0][1] * A[0][1] + A[0][2] * A[0][2] + A[1][2] * A[1][2];
            double dia = A[0][0] * A[0][0] + A[1][1] * A[1][1] + A[2][2] * A[2][2];
            if (off == 0.0 || off <= 1e-36 * dia) break;
            for (int p = 0; p < 2; p++)
                for (int q = p + 1; q < 3; q++) {
                    double apq = A[p][q];
                    if (apq == 0.0) continue;
                    double theta = (A[q][q] - A[p][p]) / (2.0 * apq);
                    double t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
                    if (!isfinite(theta) || fabs(theta) > 1e150) t = 0.5 / theta;
                    double cs = 1.0 / sqrt(t * t + 1.0), sn = t * cs;
                    for (int k = 0; k < 3; k++) {  /* A = A J */
                        double akp = A[k][p], akq = A[k][q];
                        A[k][p] = cs * akp - sn * akq; A[k][q] = sn * akp + cs * akq;
                    }
                    for (int k = 0; k < 3; k++) {  /* A = J^T A */
                        double apk = A[p][k], aqk = A[q][k];
                        A[p][k] = cs * apk - sn * aqk; A[q][k] = sn * apk + cs * aqk;
                    }
                    A[p][q] = A[q][p] = 0.0;
                    for (int k = 0; k < 3; k++) {
                        double vkp = V[k][p], vkq = V[k][q];
                        V[k][p] = cs * vkp - sn * vkq; V[k][q] = sn * vkp + cs * vkq;
                    }
                }
        }
        double e[3] = {A[0][0], A[1][1], A[2][2]};
        int o[3] = {0, 1, 2};
        for (int i = 0; i < 3; i++) for (int j = i + 1; j < 3; j++) if (e[o[j]] < e[o[i]]) { int t = o[i]; o[i] = o[j]; o[j] = t; }
        for (int i = 0; i < 3; i++) {
            val[3 * r + i] = e[o[i]];
            for (int k = 0; k < 3; k++) vec[9 * r + 3 * k + i] = V[k][o[i]];
        }
    }
}

/* collapse edge cost of edges [a, b) (see collapse.py) */
void edge_cost_rows(const int64_t *u, const int64_t *v, int64_t a, int64_t b, const float *means,
                    const double *cov6, const double *w, const double *logdet, const float *app, int napp,
                    double lam, double eps, double *out) {
    for (int64_t e = a; e < b; e++) {
        int64_t i = u[e], j = v[e];
        double wi = w[i], wj = w[j], den = wi + wj;
        if (den < 1e-300) den = 1e-300;
        double p = wi / den;
        if (!(p >= 1e-9)) p = 1e-9;   /* also NaN -> 1e-9 like np.clip? np.clip keeps NaN */
        if (p > 1 - 1e-9) p = 1 - 1e-9;
        if (wi / den != wi / den) p = wi / den;
        double q = 1.0 - p, pq = p * q;
        double d0 = (double)means[3 * i] - (double)means[3 * j];
        double d1 = (double)means[3 * i + 1] - (double)means[3 * j + 1];
        double d2 = (double)means[3 * i + 2] - (double)means[3 * j + 2];
        const double *ci = cov6 + 6 * i, *cj = cov6 + 6 * j;
        double xx = p * ci[0] + q * cj[0] + pq * d0 * d0 + eps;
        double xy = p * ci[1] + q * cj[1] + pq * d0 * d1;
        double xz = p * ci[2] + q * cj[2] + pq * d0 * d2;
        double yy = p * ci[3] + q * cj[3] + pq * d1 * d1 + eps;
        double yz = p * ci[4] + q * cj[4] + pq * d1 * d2;
        double zz = p * ci[5] + q * cj[5] + pq * d2 * d2 + eps;
        double det = xx * (yy * zz - yz * yz) - xy * (xy * zz - yz * xz) + xz * (xy * yz - yy * xz);
        double ld = log(det > 1e-300 ? det : 1e-300);
        if (det != det) ld = det;
        double geo = 0.5 * (ld - p * logdet[i] - q * logdet[j]);
        if (lam > 0 && app) {
            const float *ai = app + (int64_t)napp * i, *aj = app + (int64_t)napp * j;
            double acc = 0;
            for (int c = 0; c < napp; c++) { double t = (double)ai[c] - (double)aj[c]; acc += t * t; }
            geo += lam * acc;
        }
        out[e] = geo;
    }
}

/* undirected edges (u < v) of a directed kNN graph (n, k), each once, in row order; returns the
   count written to u, v (sized n * k) */
int64_t knn_edges(const int64_t *nbr, int64_t n, int k, int64_t *u, int64_t *v) {
    int64_t e = 0;
    for (int64_t i = 0; i < n; i++)
        for (int t = 0; t < k; t++) {
            int64_t j = nbr[i * k + t];
            if (j < 0 || j == i) continue;
            if (j < i) {  /* listed by j as well? then that copy (j -> i) is the one kept */
                int dup = 0;
                for (int r = 0; r < k; r++) if (nbr[j * k + r] == i) { dup = 1; break; }
                if (dup) continue;
                u[e] = j; v[e] = i;
            } else { u[e] = i; v[e] = j; }
            e++;
        }
    return e;
}

/* stable argsort of n doubles (no NaN) by an LSD radix sort on order-preserving 64-bit keys
   (same order as numpy's stable argsort); returns 0, or -1 when out of memory */
int argsort_f64(const double *x, int64_t n, int64_t *order) {
    uint64_t *ka = malloc(sizeof(uint64_t) * (n ? n : 1)), *kb = malloc(sizeof(uint64_t) * (n ? n : 1));
    int64_t *ob = malloc(sizeof(int64_t) * (n ? n : 1));
    const int D = 11, B = 1 << D;
    int64_t *hist = malloc(sizeof(int64_t) * B);
    if (!ka || !kb || !ob || !hist) { free(ka); free(kb); free(ob); free(hist); return -1; }
    uint64_t lo = UINT64_MAX, hi = 0;
    for (int64_t i = 0; i < n; i++) {
        double v = x[i] == 0.0 ? 0.0 : x[i];  /* -0.0 == 0.0 */
        uint64_t u; memcpy(&u, &v, 8);
        u = (u >> 63) ? ~u : (u | 0x8000000000000000ull);
        ka[i] = u; order[i] = i;
        if (u < lo) lo = u;
        if (u > hi) hi = u;
    }
    uint64_t span = n ? hi ^ lo : 0;
    int nbits = 0;
    while (nbits < 64 && (span >> nbits)) nbits++;
    uint64_t *sorted_keys;
    RADIX_SORT(int64_t, ka, kb, order, ob, n, nbits, D, hist, sorted_keys);
    (void)sorted_keys;
    free(ka); free(kb); free(ob); free(hist);
    return 0;
}

/* greedy cheapest-first matching over edges given in cost order; returns the number chosen */
int64_t greedy_match(const int64_t *u, const int64_t *v, const int64_t *order, int64_t ne, int64_t n,
                     int64_t max_pairs, int64_t *chosen) {
    uint8_t *used = calloc(n > 0 ? n : 1, 1);
    if (!used) return -1;
    int64_t c = 0;
    for (int64_t r = 0; r < ne && c < max_pairs; r++) {
        int64_t e = order[r], a = u[e], b = v[e];
        if (a == b || used[a] || used[b]) continue;
        used[a] = used[b] = 1;
        chosen[c++] = e;
    }
    free(used);
    return c;
}
