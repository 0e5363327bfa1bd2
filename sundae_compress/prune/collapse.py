"""Iterative pairwise edge collapse of a Gaussian scene (``prune(..., merge="collapse")``).

Rounds, until the target count is reached:

1. kNN graph on the current centres (``k`` neighbours; the C grid kernel of :mod:`.graph`, scipy
   kd-tree without it).
2. Edge cost = shape cost x appearance cost x spectral protection:

   * shape: the Runnalls bound on KL(mixture || merged), with mixture weights from the masses
     ``p_i = w_i / (w_i + w_j)`` (w = alpha x area):
     ``0.5 (log det S_m - p_i log det S_i - p_j log det S_j)`` -- zero for identical Gaussians,
     large when the merged Gaussian must cover empty space;
   * appearance: ``+ lam x |sh_i - sh_j|^2`` (all SH coefficients);
   * spectral band-stop: the cost is multiplied by ``1 + beta x max(f_i, f_j)`` where
     ``f = |2 q - 1|`` and ``q`` is the quantile of the Gaussian's spectral score (graph Laplacian
     row norm): Gaussians at the high- and low-frequency extremes are merged last, the middle band
     first -- the SUNDAE band-stop idea applied to the merge order. Merged Gaussians inherit the
     larger protection of their two parents.
3. A matching of disjoint cheapest edges: edges that are the cheapest for both ends are taken,
   their ends removed, repeat (this reproduces the greedy cheapest-first matching without a
   Python loop over edges).
   The costs (one C loop over the edges, threaded) and the greedy matching over the stably
   cost-sorted edges (one C pass) use the native helpers (``csrc/merge.c``) when built.
4. The matched pairs (only the cheapest ones in the last round, to land on the exact count) are
   moment-matched with :func:`sundae_compress.prune.group.merge_groups`.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..gaussians import GaussianSet
from . import moments as mm
from .native import lib as native_lib
from .native import ptr, run_parallel, split
from .group import gaussian_mass, merge_groups

EPS_COV = 1e-12


def _logdet6(c: np.ndarray) -> np.ndarray:
    xx, xy, xz, yy, yz, zz = (c[..., i] for i in range(6))
    det = xx * (yy * zz - yz * yz) - xy * (xy * zz - yz * xz) + xz * (xy * yz - yy * xz)
    return np.log(np.maximum(det, 1e-300))


def edge_costs(i: np.ndarray, j: np.ndarray, means: np.ndarray, cov6: np.ndarray, w: np.ndarray,
               logdet: np.ndarray, app: np.ndarray, lam: float, chunk: int = 1 << 21) -> np.ndarray:
    """Cost of merging Gaussian ``i[e]`` with ``j[e]`` for every edge ``e`` (float64), chunked."""
    out = np.empty(len(i), np.float64)
    lib = native_lib()
    if lib is not None and len(i):
        ii = np.ascontiguousarray(i, np.int64)
        jj = np.ascontiguousarray(j, np.int64)
        mf = np.ascontiguousarray(means, np.float32)
        c6 = np.ascontiguousarray(cov6, np.float64)
        ww = np.ascontiguousarray(w, np.float64)
        ld = np.ascontiguousarray(logdet, np.float64)
        use_app = lam > 0 and app is not None
        ap = np.ascontiguousarray(app, np.float32).reshape(len(means), -1) if use_app else None
        napp = ap.shape[1] if use_app else 0
        run_parallel(lambda a, b: lib.edge_cost_rows(ptr(ii), ptr(jj), a, b, ptr(mf), ptr(c6), ptr(ww),
                                                      ptr(ld), ptr(ap) if use_app else None, napp,
                                                      float(lam), EPS_COV, ptr(out)),
                      split(len(ii), 8))
        return out
    for a in range(0, len(i), chunk):
        out[a:a + chunk] = _edge_costs(i[a:a + chunk], j[a:a + chunk], means, cov6, w, logdet, app, lam)
    return out


def _edge_costs(i, j, means, cov6, w, logdet, app, lam):
    wi, wj = w[i], w[j]
    p = wi / np.maximum(wi + wj, 1e-300)
    p = np.clip(p, 1e-9, 1 - 1e-9)[:, None]
    d = means[i].astype(np.float64) - means[j].astype(np.float64)
    # merged covariance: p S_i + q S_j + p q d d^T
    c = p * cov6[i] + (1 - p) * cov6[j]
    pq = (p * (1 - p))[:, 0]
    for k, (a, b) in enumerate(mm.COV6):
        c[:, k] += pq * d[:, a] * d[:, b]
    c[:, 0] += EPS_COV
    c[:, 3] += EPS_COV
    c[:, 5] += EPS_COV
    p = p[:, 0]
    geo = 0.5 * (_logdet6(c) - p * logdet[i] - (1 - p) * logdet[j])
    if lam > 0 and app is not None:
        geo = geo + lam * ((app[i] - app[j]) ** 2).sum(1)
    return geo


def greedy_matching(u: np.ndarray, v: np.ndarray, cost: np.ndarray, n: int, max_pairs: int) -> np.ndarray:
    """Indices of a set of disjoint edges, equal to the greedy cheapest-first matching
    (ties broken by edge index), stopped after ``max_pairs`` edges (the cheapest ones)."""
    lib = native_lib()
    cost = np.asarray(cost, np.float64)
    if lib is not None and not np.isnan(cost).any():
        cost = np.ascontiguousarray(cost)
        order = np.empty(len(cost), np.int64)
        if lib.argsort_f64(ptr(cost), len(cost), ptr(order)) < 0:  # radix: same as a stable argsort
            raise MemoryError("sorting edge costs")
    else:
        order = np.argsort(cost, kind="stable")  # = lexsort((arange, cost)): ties by edge index
    if lib is not None:
        uu = np.ascontiguousarray(u, np.int64)
        vv = np.ascontiguousarray(v, np.int64)
        order = np.ascontiguousarray(order, np.int64)
        chosen = np.empty(max(0, min(int(max_pairs), n // 2 + 1)), np.int64)
        c = lib.greedy_match(ptr(uu), ptr(vv), ptr(order), len(order), n, len(chosen), ptr(chosen))
        if c < 0:
            raise MemoryError("greedy matching")
        return chosen[:c]
    u, v = u[order], v[order]
    rank = np.arange(len(order))
    alive = u != v  # a self-loop is no pair
    matched = np.zeros(n, bool)
    chosen = []
    while alive.any():
        idx = np.flatnonzero(alive)
        # first (= cheapest) alive edge of every node: edges are in rank order, so write them in
        # reverse and let the last write (the smallest rank) stay
        r = idx[::-1]
        best = np.full(n, len(order), np.int64)
        best[v[r]] = r
        best_u = np.full(n, len(order), np.int64)
        best_u[u[r]] = r
        np.minimum(best, best_u, out=best)
        dom = idx[(best[u[idx]] == rank[idx]) & (best[v[idx]] == rank[idx])]
        chosen.append(dom)
        matched[u[dom]] = True
        matched[v[dom]] = True
        alive &= ~(matched[u] | matched[v])
    sel = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
    return order[sel[:max_pairs]]


def mutual_matching(nbr: np.ndarray, cost: np.ndarray, max_pairs: int, iters: int = 4):
    """Disjoint pairs from a directed kNN cost matrix without sorting all edges.

    Each still-free node points at its cheapest free neighbour; pairs that point at each other
    are taken; repeated ``iters`` times. Returns ``(u, v)`` arrays, the cheapest ``max_pairs``
    pairs (u < v).
    """
    n, k = nbr.shape
    rows = np.arange(n)
    free = np.ones(n, bool)
    us, vs, cs = [], [], []
    valid = nbr >= 0
    nb = np.where(valid, nbr, 0)
    for _ in range(iters):
        cm = np.where(valid & free[nb] & free[:, None], cost, np.inf)
        b = np.argmin(cm, axis=1)
        bc = cm[rows, b]
        bj = np.where(np.isfinite(bc), nb[rows, b], -1)
        back = np.where(bj >= 0, bj[np.maximum(bj, 0)], -2)
        take = (back == rows) & (rows < bj)
        if not take.any():
            break
        u, v = rows[take], bj[take]
        us.append(u)
        vs.append(v)
        cs.append(bc[take])
        free[u] = False
        free[v] = False
        if sum(len(x) for x in us) >= max_pairs:
            break
    if not us:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    u, v, c = np.concatenate(us), np.concatenate(vs), np.concatenate(cs)
    if len(u) > max_pairs:
        sel = np.sort(np.lexsort((u, c))[:max_pairs])
        u, v = u[sel], v[sel]
    return u, v


def _undirected_edges(nbr: np.ndarray):
    """(u, v) with u < v: every edge of the directed kNN lists ``nbr`` (-1 padded) once."""
    n, k = nbr.shape
    lib = native_lib()
    if lib is not None:
        nb = np.ascontiguousarray(nbr, np.int64)
        u = np.empty(n * k, np.int64)
        v = np.empty(n * k, np.int64)
        e = lib.knn_edges(ptr(nb), n, k, ptr(u), ptr(v))
        return u[:e].copy(), v[:e].copy()
    src = np.repeat(np.arange(n), k)
    dst = nbr.reshape(-1)
    ok = (dst >= 0) & (dst != src)
    src, dst = src[ok], dst[ok]
    # drop i -> j (i > j) when j -> i is also listed: the copy from the lower index is kept
    back = np.zeros(len(src), bool)
    for col in range(k):
        back |= nbr[dst, col] == src
    keep = ~((src > dst) & back)
    src, dst = src[keep], dst[keep]
    return np.minimum(src, dst), np.maximum(src, dst)


def _knn(x: np.ndarray, k: int) -> np.ndarray:
    """(n, k) indices of the k nearest other centres (-1 padded), no edge-length cut."""
    from .graph import knn_graph

    return knn_graph(x, k=k, threshold=np.inf).nbr


def collapse_to(gs: GaussianSet, count: int, *, k: int = 8, mass: str = "area", opacity: str = "coverage",
                scores: Optional[np.ndarray] = None, beta: float = 0.0, lam: float = 1.0,
                round_fraction: float = 0.5, matching: str = "greedy",
                timings: Optional[dict] = None) -> GaussianSet:
    """Collapse ``gs`` to exactly ``count`` Gaussians by rounds of pairwise moment-matched merges.

    ``matching="greedy"`` takes the exact greedy cheapest-first matching over the symmetrised kNN
    edges; ``"mutual"`` the faster row-local mutual-best approximation (no global sort).
    """
    import time

    tm = timings if timings is not None else {}

    def lap(name, t0):
        tm[name] = tm.get(name, 0.0) + time.perf_counter() - t0
        return time.perf_counter()

    n0 = len(gs)
    count = int(count)
    if count >= n0:
        return gs.subset(np.arange(n0))
    if count <= 0:
        return gs.subset(np.zeros(0, np.int64))
    prot = None
    if beta > 0:
        if scores is None:
            from .graph import spectral_scores

            scores = spectral_scores(gs.means, k=16)
        q = np.argsort(np.argsort(scores, kind="stable"), kind="stable") / max(n0 - 1, 1)
        prot = np.abs(2.0 * q - 1.0)
    cur = gs
    rounds = 0
    while len(cur) > count:
        n = len(cur)
        need = n - count
        kk = min(k, n - 1)
        t0 = time.perf_counter()
        nbr = _knn(cur.means, kk)
        t0 = lap("knn", t0)
        cov6 = mm.cov6_from(cur.quats, cur.scales)
        w = gaussian_mass(cur, mass)
        logdet = _logdet6(cov6 + np.array([EPS_COV, 0, 0, EPS_COV, 0, EPS_COV]))
        app = cur.sh.reshape(n, -1)
        max_pairs = min(need, max(1, int(round_fraction * n)))
        if matching == "greedy":
            u, v = _undirected_edges(nbr)
            c = edge_costs(u, v, cur.means, cov6, w, logdet, app, lam)
            if prot is not None:
                c = c * (1.0 + beta * np.maximum(prot[u], prot[v]))
            c = np.where(np.isfinite(c), c, np.inf)
            t0 = lap("costs", t0)
            pairs = greedy_matching(u, v, c, n, max_pairs)
            pu, pv = u[pairs], v[pairs]
        else:
            src = np.repeat(np.arange(n), kk)
            dst = np.maximum(nbr.reshape(-1), 0)
            c = edge_costs(src, dst, cur.means, cov6, w, logdet, app, lam).reshape(n, kk)
            if prot is not None:
                c = c * (1.0 + beta * np.maximum(prot[:, None], prot[np.maximum(nbr, 0)]))
            c = np.where(np.isfinite(c) & (nbr >= 0), c, np.inf)
            t0 = lap("costs", t0)
            pu, pv = mutual_matching(nbr, c, max_pairs)
        t0 = lap("matching", t0)
        if len(pu) == 0:
            raise RuntimeError(f"edge collapse stalled at {n} Gaussians (target {count})")
        group = np.arange(n)
        group[pv] = pu
        # compact ids keeping the order of the lower index (deterministic, stable)
        alive = np.ones(n, bool)
        alive[pv] = False
        new_id = np.cumsum(alive) - 1
        group = new_id[group]
        m = int(alive.sum())
        nxt = merge_groups(cur, group, m, anchor=cur.means[alive].astype(np.float64), mass=mass,
                           opacity=opacity, cov6=cov6)
        if prot is not None:
            p2 = prot[alive].copy()
            p2[new_id[pu]] = np.maximum(prot[pu], prot[pv])
            prot = p2
        cur = nxt
        rounds += 1
        t0 = lap("merge", t0)
    cur.meta["merge"] = (f"collapse(k={k}, mass={mass}, opacity={opacity}, beta={beta}, lam={lam}, "
                         f"matching={matching}, rounds={rounds})")
    return cur
