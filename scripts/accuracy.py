#!/usr/bin/env python3
"""Accuracy of an attention output against float64 exact attention, always beside the
"plain mean of V" baseline. numpy only.

Modes
  compare  --q Q --k K --v V --o O [--causal] [--scale S] [--json out.json]
           O from our tool; q/k/v/o are .npy of shape [h,n,d] or [b,h,n,d] (any float dtype).
           K/V may have fewer heads than Q (GQA: h_q a multiple of h_kv).
  stats    --data DIR (holding q.npy k.npy v.npy) or --q/--k/--v [--causal] [--rows N]
           effective keys per query exp(entropy of the attention row): mean, median; baselines.
  port     --data DIR [--causal] --method official|strat|strat_cv|kmeans|kmeans_cv|oracle
           [--min-seq-len 4096] [--no-mask] [--seeds 3] [-b 256 -m 256 -r 7]
           runs the numpy port of the official HyperAttention (scripts/official_hyperattn_numpy.py)
           or one of its variants and reports the same errors.
Errors (whole-tensor Frobenius norms, and per head):
  rel_O = ||O - O*||_F / ||O*||_F      rel_V = ||O - O*||_F / ||V||_F
Baseline mean-of-V: O_i = mean of V over all keys (causal: over keys j <= i).
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from official_hyperattn_numpy import HyperAttentionNP, exact_attn  # noqa: E402


def load(path):
    a = np.load(path)
    if a.ndim == 3:
        a = a[None]
    assert a.ndim == 4, f"{path}: expected [h,n,d] or [b,h,n,d], got {a.shape}"
    return a.astype(np.float64)


def load_qkv(args):
    if args.data:
        args.q, args.k, args.v = (os.path.join(args.data, f"{x}.npy") for x in "qkv")
    q, k, v = load(args.q), load(args.k), load(args.v)
    if k.shape[1] != q.shape[1]:  # GQA / MQA
        assert q.shape[1] % k.shape[1] == 0
        rep = q.shape[1] // k.shape[1]
        k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
    B, H, n, d = q.shape
    scale = d ** -0.5 if args.scale is None else args.scale
    return q.reshape(B * H, n, d), k.reshape(B * H, -1, d), v.reshape(B * H, v.shape[2], -1), scale, (B, H)


def exact_all(q, k, v, scale, causal, cache=None):
    if cache and os.path.exists(cache):
        z = np.load(cache)
        return z["o"], z["lse"]
    res = [exact_attn(q[h], k[h], v[h], scale, causal) for h in range(q.shape[0])]
    o, l = np.stack([r[0] for r in res]), np.stack([r[1] for r in res])
    if cache:
        np.savez(cache, o=o, lse=l)
    return o, l


def mean_v(v, nq, causal):
    if not causal:
        return np.broadcast_to(v.mean(1, keepdims=True), (v.shape[0], nq, v.shape[2]))
    c = np.cumsum(v, axis=1)[:, :nq]
    return c / np.arange(1, nq + 1)[None, :, None]


def errors(o, ostar, v):
    diff = o - ostar
    per_head = []
    for h in range(o.shape[0]):
        dn = np.linalg.norm(diff[h])
        per_head.append({"rel_O": float(dn / np.linalg.norm(ostar[h])), "rel_V": float(dn / np.linalg.norm(v[h]))})
    dn = np.linalg.norm(diff)
    return {"rel_O": float(dn / np.linalg.norm(ostar)), "rel_V": float(dn / np.linalg.norm(v)), "per_head": per_head}


def eff_keys(q, k, scale, causal, rows, chunk=512):
    out = []
    n = k.shape[1]
    for h in range(q.shape[0]):
        e = []
        for s in range(0, len(rows), chunk):
            r = rows[s:s + chunk]
            lg = q[h, r] @ k[h].T * scale
            if causal:
                lg = np.where(np.arange(n)[None, :] > r[:, None], -np.inf, lg)
            lg -= lg.max(1, keepdims=True)
            p = np.exp(lg)
            p /= p.sum(1, keepdims=True)
            with np.errstate(divide="ignore", invalid="ignore"):
                e.append(np.exp(-np.where(p > 0, p * np.log(p), 0).sum(1)))
        e = np.concatenate(e)
        out.append({"mean": float(e.mean()), "median": float(np.median(e)),
                    "p10": float(np.percentile(e, 10)), "p90": float(np.percentile(e, 90))})
    return out


def fmt(tag, e):
    return f"{tag:<28s} rel_O {e['rel_O']:.4f}  rel_V {e['rel_V']:.4f}   per head rel_O " + \
        " ".join(f"{x['rel_O']:.3f}" for x in e["per_head"])


METHODS = {
    "official": dict(residual="uniform", bucketing="lsh"),
    "strat": dict(residual="strat", bucketing="lsh"),
    "strat_cv": dict(residual="strat_cv", bucketing="lsh"),
    "kmeans": dict(residual="uniform", bucketing="kmeans"),
    "kmeans_strat": dict(residual="strat", bucketing="kmeans"),
    "kmeans_cv": dict(residual="strat_cv", bucketing="kmeans"),
    "oracle": dict(residual="uniform", bucketing="oracle"),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["compare", "stats", "port"])
    ap.add_argument("--data")
    ap.add_argument("--q"); ap.add_argument("--k"); ap.add_argument("--v"); ap.add_argument("--o")
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--scale", type=float, default=None)
    ap.add_argument("--json", default=None, help="write the report here")
    ap.add_argument("--cache", default=None, help="npz cache for the exact O* (port mode)")
    ap.add_argument("--rows", type=int, default=2048, help="stats: query rows sampled (0 = all)")
    ap.add_argument("--method", default="official", choices=sorted(METHODS))
    ap.add_argument("--min-seq-len", type=int, default=4096)
    ap.add_argument("--no-mask", action="store_true", help="port: don't mask in-block samples (official fp32/cuda paths)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("-b", "--block", type=int, default=256)
    ap.add_argument("-m", "--sample", type=int, default=256)
    ap.add_argument("-r", "--projs", type=int, default=7)
    ap.add_argument("--clusters", type=int, default=32)
    ap.add_argument("--lloyd", type=int, default=5)
    args = ap.parse_args()

    q, k, v, scale, (B, H) = load_qkv(args)
    nq = q.shape[1]
    report = {"mode": args.mode, "causal": args.causal, "shape": [B, H, nq, q.shape[2]], "scale": scale,
              "data": args.data or [args.q, args.k, args.v]}

    if args.mode == "stats":
        rng = np.random.default_rng(0)
        rows = np.arange(nq) if args.rows in (0, None) or args.rows >= nq else np.sort(rng.choice(nq, args.rows, replace=False))
        ek = eff_keys(q, k, scale, args.causal, rows)
        allk = np.concatenate([[e["mean"]] for e in ek])
        report["eff_keys_per_head"] = ek
        report["eff_keys_mean_over_heads"] = float(allk.mean())
        print(f"effective keys/query ({'causal' if args.causal else 'non-causal'}, {len(rows)} rows/head):")
        for h, e in enumerate(ek):
            print(f"  head {h}: mean {e['mean']:.1f}  median {e['median']:.1f}  p10 {e['p10']:.1f}  p90 {e['p90']:.1f}")

    ostar, _ = exact_all(q, k, v, scale, args.causal, args.cache)
    mv = mean_v(v, nq, args.causal)
    report["mean_of_V"] = errors(mv, ostar, v)
    report["zero_output"] = errors(np.zeros_like(ostar), ostar, v)

    if args.mode == "compare":
        o = load(args.o)
        o = o.reshape(B * H, nq, -1)
        report["ours"] = errors(o, ostar, v)
        print(fmt("ours", report["ours"]))
    elif args.mode == "port":
        runs = []
        t0 = time.time()
        cost = 0
        for seed in range(args.seeds):
            ha = HyperAttentionNP(q.shape[2], r=args.projs, block=args.block, sample=args.sample,
                                  min_seq_len=args.min_seq_len, seed=seed, mask=not args.no_mask,
                                  clusters=args.clusters, lloyd_iters=args.lloyd, **METHODS[args.method])
            o, _ = ha(q, k, v, scale, causal=args.causal)
            cost += ha.cost
            e = errors(o, ostar, v)
            runs.append(e)
            print(fmt(f"{args.method} seed {seed}", e))
        report["method"] = args.method
        report["params"] = dict(b=args.block, m=args.sample, r=args.projs, min_seq_len=args.min_seq_len,
                                mask=not args.no_mask, clusters=args.clusters, lloyd=args.lloyd)
        report["runs"] = runs
        report["rel_O_mean"] = float(np.mean([e["rel_O"] for e in runs]))
        report["rel_V_mean"] = float(np.mean([e["rel_V"] for e in runs]))
        report["exact_logits_fraction"] = cost / args.seeds / (q.shape[0] * nq * k.shape[1] * (0.5 if args.causal else 1))
        report["seconds"] = time.time() - t0
        print(f"{args.method:<28s} mean over {args.seeds} seeds: rel_O {report['rel_O_mean']:.4f} rel_V {report['rel_V_mean']:.4f}"
              f"  (exact-logit fraction {report['exact_logits_fraction']:.3f})")
    print(fmt("baseline mean-of-V", report["mean_of_V"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
