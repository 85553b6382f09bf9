#!/usr/bin/env python3
"""Numpy port of the official HyperAttention forward pass (insuhan/hyper-attn,
models/attention/{hyper_attn,angular_lsh,utils}.py), written from its description, plus cheap
estimator variants used to choose ours. float64 throughout. No torch needed.

Official choices reproduced (see docs/accuracy-baselines.md for the full summary):
  * LSH: r Gaussian directions W [d, r], drawn ONCE per module and shared by Q and K, by every head,
    every batch element and every recursion node. code c = sum_j [x.w_j > 0] 2^j, bucket = perm[c]
    with perm = the reflected Gray sequence (perm[c] = c ^ (c >> 1)).
  * stable sort of Q rows and of K rows by bucket; sorted K/V (and Q) zero-padded to a multiple of b.
  * nb = n_k_padded / b key blocks of b; query block size = n_q_padded // nb; exact attention of
    query block j against key block j (padded zero keys take part: logit 0, value 0).
  * m sample positions drawn uniformly WITH replacement from [0, n_k) of the sorted keys, one set per
    (batch, head) per call, shared by all queries of that head; a sample whose key block equals the
    query's block is masked (official: only in the Triton fp16/bf16 path -- the fp32 torch path and
    the cuda=True flash-attn path ignore the mask; `mask=False` reproduces those); lse_res += log(n_k/m).
  * merge by lse; rows scattered back.
  * non-causal: exact if n_q < min_seq_len. causal: exact causal if n_k <= min_seq_len, else pad to even,
    recurse on both diagonal halves, the lower-left rectangle goes through the non-causal routine
    (which itself is exact when n/2 < min_seq_len), merged into the bottom half.

Variants (residual estimator / bucketing), for our design choice:
  residual="uniform"      official (with replacement, weight n_k/m, in-block samples masked)
  residual="strat"        m strata of the sorted keys (proportional partition), one uniform draw
                          per stratum, weight = stratum size, samples in the query's block masked
  residual="strat_cv"     strat + control variate on sum V outside the block:
                          N = sum_s w_s e_s v_s + beta (V_out - sum_s w_s v_s), beta = D_hat / |out|
  bucketing="lsh"         official sorted-LSH equal blocks
  bucketing="kmeans"      centered K, C clusters (default 32), a few Lloyd iterations; each query to
                          the cluster of largest q.centroid; exact attention within its cluster
  bucketing="oracle"      each query's true top-b keys (reference only, not a real algorithm)
"""
import numpy as np


def gray_perm(r):
    a = np.array([0, 1])
    for s in range(2, r + 1):
        a = np.concatenate([a, a[::-1] + 2 ** (s - 1)])
    return a  # == c ^ (c >> 1)


def _lse(x, axis=-1):
    mx = np.max(x, axis=axis, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    with np.errstate(divide="ignore"):
        return (mx + np.log(np.sum(np.exp(x - mx), axis=axis, keepdims=True))).squeeze(axis)


def exact_attn(q, k, v, scale, causal=False, chunk=1024):
    """q [nq,d], k [nk,d], v [nk,dv] -> (o [nq,dv], lse [nq]); causal aligns the diagonal at the top-left."""
    nq = q.shape[0]
    o = np.empty((nq, v.shape[1]))
    lse = np.empty(nq)
    for s in range(0, nq, chunk):
        lg = (q[s:s + chunk] @ k.T) * scale
        if causal:
            rows = np.arange(s, min(s + chunk, nq))[:, None]
            lg = np.where(np.arange(k.shape[0])[None, :] > rows, -np.inf, lg)
        l = _lse(lg)
        p = np.exp(lg - l[:, None])
        o[s:s + chunk] = p @ v
        lse[s:s + chunk] = l
    return o, lse


def merge(o1, l1, o2, l2):
    l = np.logaddexp(l1, l2)
    with np.errstate(invalid="ignore"):
        a = np.where(np.isfinite(l1), np.exp(l1 - l), 0.0)
        b = np.where(np.isfinite(l2), np.exp(l2 - l), 0.0)
    return o1 * a[:, None] + o2 * b[:, None], l


class HyperAttentionNP:
    def __init__(self, d, r=7, block=256, sample=256, min_seq_len=4096, seed=0, mask=True,
                 residual="uniform", bucketing="lsh", clusters=32, lloyd_iters=5, proj=None):
        self.rng = np.random.default_rng(seed)
        self.r, self.b, self.m, self.min_seq_len = r, block, sample, min_seq_len
        self.mask, self.residual, self.bucketing = mask, residual, bucketing
        self.clusters, self.lloyd_iters = clusters, lloyd_iters
        # one set of directions for the whole module (official: proj_dir buffer of shape (1,1,d,r))
        self.W = self.rng.standard_normal((d, r)) if proj is None else np.asarray(proj, np.float64)
        self.perm = gray_perm(r)
        self.enc = 2 ** np.arange(r)
        self.cost = 0  # number of exact (block/cluster) logits evaluated, for cost comparisons

    def hash(self, x):
        return self.perm[((x @ self.W) > 0).astype(np.int64) @ self.enc]

    # ----------------------------------------------------------------- public API: [H, n, d]
    def __call__(self, q, k, v, scale=None, causal=False, sample_override=None):
        q, k, v = (np.asarray(t, np.float64) for t in (q, k, v))
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        self._samples = sample_override
        outs = [self.forward(q[h], k[h], v[h], scale, causal) for h in range(q.shape[0])]
        return np.stack([o for o, _ in outs]), np.stack([l for _, l in outs])

    def forward(self, q, k, v, scale, causal):
        if not causal:
            return self.noncausal(q, k, v, scale)
        n = k.shape[0]
        if n <= self.min_seq_len:
            self.cost += n * (n + 1) // 2
            return exact_attn(q, k, v, scale, causal=True)
        nq = q.shape[0]
        if nq % 2:  # official pads q, k, v with one zero row (then drops the last output row)
            z = lambda t: np.concatenate([t, np.zeros((1, t.shape[1]))])
            q, k, v = z(q), z(k), z(v)
        h = q.shape[0] // 2
        hk = k.shape[0] // 2
        o_up, l_up = self.forward(q[:h], k[:hk], v[:hk], scale, True)
        o_dn, l_dn = self.forward(q[h:], k[hk:], v[hk:], scale, True)
        o_r, l_r = self.noncausal(q[h:], k[:hk], v[:hk], scale)
        o_dn, l_dn = merge(o_dn, l_dn, o_r, l_r)
        o, l = np.concatenate([o_up, o_dn]), np.concatenate([l_up, l_dn])
        return o[:nq], l[:nq]

    # ----------------------------------------------------------------- rectangle
    def noncausal(self, q, k, v, scale):
        nq, nk = q.shape[0], k.shape[0]
        if self.min_seq_len > nq:
            self.cost += nq * nk
            return exact_attn(q, k, v, scale)
        if self.bucketing == "lsh":
            return self._lsh_rect(q, k, v, scale)
        return self._group_rect(q, k, v, scale)

    def _draw_uniform(self, nk):
        return self.rng.integers(0, nk, size=self.m)

    def _lsh_rect(self, q, k, v, scale):
        nq, nk = q.shape[0], k.shape[0]
        b = self.b
        qi = np.argsort(self.hash(q), kind="stable")
        ki = np.argsort(self.hash(k), kind="stable")
        pad = lambda t, n: np.concatenate([t, np.zeros((n - t.shape[0], t.shape[1]))]) if n > t.shape[0] else t
        nkp = -(-nk // b) * b if b > 0 else nk
        nqp = -(-nq // b) * b if (b > 0 and nq % b) else nq
        qs, ks, vs = pad(q[qi], nqp), pad(k[ki], nkp), pad(v[ki], nkp)
        nb = nkp // b
        qb = qs.shape[0] // nb
        # block-diagonal part
        o_blk = np.empty((nb * qb, v.shape[1]))
        l_blk = np.empty(nb * qb)
        for j in range(nb):
            o_blk[j * qb:(j + 1) * qb], l_blk[j * qb:(j + 1) * qb] = exact_attn(
                qs[j * qb:(j + 1) * qb], ks[j * b:(j + 1) * b], vs[j * b:(j + 1) * b], scale)
        self.cost += nb * qb * b
        o_blk, l_blk = o_blk[:nq], l_blk[:nq]
        qs, ks, vs = qs[:nq], ks[:nk], vs[:nk]
        qgroup = np.arange(nq) // qb
        kgroup = np.arange(nk) // b
        if self.m > 0 and nq > qb and nk > b:
            o_res, l_res = self._residual(qs, ks, vs, scale, qgroup, kgroup)
            o, l = merge(o_blk, l_blk, o_res, l_res)
        else:
            o, l = o_blk, l_blk
        out_o = np.empty_like(o)
        out_l = np.empty_like(l)
        out_o[qi], out_l[qi] = o, l
        return out_o, out_l

    def _residual(self, qs, ks, vs, scale, qgroup, kgroup):
        """Residual estimate over keys (given in the order used for stratification)."""
        nq, nk, m = qs.shape[0], ks.shape[0], self.m
        if self.residual == "uniform":
            s = self._draw_uniform(nk)
            logw = np.full(m, np.log(nk / m))
        else:  # stratified: proportional partition of [0, nk) into m strata, one draw each
            edges = (np.arange(m + 1) * nk) // m
            size = np.diff(edges)
            keep = size > 0
            s = edges[:-1][keep] + np.floor(self.rng.random(keep.sum()) * size[keep]).astype(np.int64)
            logw = np.log(size[keep].astype(np.float64))
        lg = (qs @ ks[s].T) * scale + logw[None, :]
        masked = qgroup[:, None] == kgroup[s][None, :]
        if self.mask:
            lg = np.where(masked, -np.inf, lg)
        if self.residual != "strat_cv":
            l = _lse(lg)
            with np.errstate(invalid="ignore"):
                p = np.where(np.isfinite(l)[:, None], np.exp(lg - l[:, None]), 0.0)
            return p @ vs[s], l
        # control variate: numerator += beta * (sum_{out} v - sum_s w_s v_s), beta = D_hat / |out|
        G = int(max(kgroup.max(), qgroup.max())) + 1
        vsum_group = np.zeros((G, vs.shape[1]))
        np.add.at(vsum_group, kgroup, vs)
        cnt_group = np.bincount(kgroup, minlength=G).astype(np.float64)
        qg = qgroup
        v_out = vs.sum(0)[None, :] - vsum_group[qg]                   # [nq, dv]
        n_out = nk - cnt_group[qg]                                     # [nq]
        w = np.where(masked, 0.0, np.exp(logw)[None, :])               # [nq, m]
        wv_sum = w @ vs[s]                                             # sum_s w_s v_s
        mx = np.max(lg, axis=1)
        mx = np.where(np.isfinite(mx), mx, 0.0)
        e = np.exp(lg - mx[:, None])                                   # = w_s e_s / exp(mx)
        D = e.sum(1)
        beta = D / np.maximum(n_out, 1.0)                              # mean weight, same shift
        N = e @ vs[s] + beta[:, None] * (v_out - wv_sum)
        with np.errstate(divide="ignore", invalid="ignore"):
            l = np.where(D > 0, mx + np.log(D), -np.inf)
            o = np.where(D[:, None] > 0, N / D[:, None], 0.0)
        return o, l

    def _group_rect(self, q, k, v, scale):
        """Unequal groups: k-means clusters or the oracle's top-b sets, + residual samples."""
        nq, nk = q.shape[0], k.shape[0]
        if self.bucketing == "oracle":
            lg_all = (q @ k.T) * scale
            top = np.argpartition(-lg_all, self.b, axis=1)[:, :self.b]
            inset = np.zeros((nq, nk), bool)
            np.put_along_axis(inset, top, True, axis=1)
            l_in = _lse(np.where(inset, lg_all, -np.inf))
            o_in = np.exp(np.where(inset, lg_all, -np.inf) - l_in[:, None]) @ v
            self.cost += nq * self.b
            # residual: uniform/stratified over original order, masked where in the top set
            if self.residual == "uniform":
                s = self._draw_uniform(nk); logw = np.full(self.m, np.log(nk / self.m))
            else:
                edges = (np.arange(self.m + 1) * nk) // self.m; size = np.diff(edges)
                s = edges[:-1] + np.floor(self.rng.random(self.m) * size).astype(np.int64)
                logw = np.log(size.astype(np.float64))
            lg = lg_all[:, s] + logw[None, :]
            lg = np.where(inset[:, s], -np.inf, lg)
            l_r = _lse(lg)
            o_r = np.exp(lg - l_r[:, None]) @ v[s]
            return merge(o_in, l_in, o_r, l_r)
        # k-means on centered K
        C = self.clusters
        kc = k - k.mean(0)
        cent = kc[self.rng.choice(nk, C, replace=False)].copy()
        for _ in range(self.lloyd_iters):
            d2 = (kc ** 2).sum(1)[:, None] - 2 * kc @ cent.T + (cent ** 2).sum(1)[None, :]
            a = np.argmin(d2, 1)
            for c in range(C):
                if np.any(a == c):
                    cent[c] = kc[a == c].mean(0)
        d2 = (kc ** 2).sum(1)[:, None] - 2 * kc @ cent.T + (cent ** 2).sum(1)[None, :]
        kgroup = np.argmin(d2, 1)
        qgroup = np.argmax(q @ cent.T, 1)
        o = np.zeros((nq, v.shape[1]))
        l = np.full(nq, -np.inf)
        for c in range(C):
            qi = np.nonzero(qgroup == c)[0]
            ki = np.nonzero(kgroup == c)[0]
            if len(qi) and len(ki):
                o[qi], l[qi] = exact_attn(q[qi], k[ki], v[ki], scale)
                self.cost += len(qi) * len(ki)
        # residual over keys sorted by cluster (stratification follows clusters)
        korder = np.argsort(kgroup, kind="stable")
        o_r, l_r = self._residual(q, k[korder], v[korder], scale, qgroup, kgroup[korder])
        return merge(o, l, o_r, l_r)
