#!/usr/bin/env python3
"""Side-by-side on one GPU: PyTorch scaled_dot_product_attention vs hyperattn --backend cuda.

For each n: bf16 inputs (B = 1, H = 24, d = 64, N(0, 1), torch seed), SDPA timed with CUDA events
(causal and not; inputs on the GPU), then the same inputs (saved as float32 .npy: every value is
bf16, so nothing is rounded twice) through `hyperattn run --backend cuda --gpu-repeat R`, whose
kernels are timed with CUDA events on device-resident inputs inside the binary (upload and
download excluded, as for SDPA). Errors ‖O − O*‖_F / ‖O*‖_F on sampled query rows against an fp32
exact reference on the same inputs, for SDPA, our GPU path and (for n ≤ --cpu-max-n) our CPU path.

  python3 scripts/gpu-compare.py --bin PATH [--n 16384,65536,131072] [--json out.json]
"""
import argparse, json, os, re, subprocess, sys, tempfile, time

import numpy as np
import torch
import torch.nn.functional as F


def cuda_time(fn, repeats):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2], times[0]


def attention_flops(n, heads, d, causal):
    """FLOPs of exact attention: 4·n²·d per head (QKᵀ and PV), half when causal."""
    f = 4.0 * n * n * d * heads
    return f / 2 if causal else f


def reference_rows(q, k, v, rows, causal):
    """fp32 exact attention for query rows `rows` of every head: [H, len(rows), d]."""
    qs = q[0, :, rows, :].float()
    s = torch.einsum("hrd,hnd->hrn", qs, k[0].float()) / (q.shape[-1] ** 0.5)
    if causal:
        idx = torch.arange(k.shape[2], device=q.device)
        s = s.masked_fill(idx[None, None, :] > torch.as_tensor(rows, device=q.device)[None, :, None], float("-inf"))
    return torch.einsum("hrn,hnd->hrd", torch.softmax(s, dim=-1), v[0].float())


def rel_err(o, ref):
    return float(torch.linalg.norm((o.float() - ref).flatten()) / torch.linalg.norm(ref.flatten()))


def run_ours(binary, files, out, backend, mode, causal, repeats, extra_env, timeout):
    cmd = [binary, "run", "--q", files[0], "--k", files[1], "--v", files[2], "--out", out, "--backend", backend]
    if mode == "exact":
        cmd.append("--exact")
    if causal:
        cmd.append("--causal")
    if backend == "cuda" and repeats > 0:
        cmd += ["--gpu-repeat", str(repeats)]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **extra_env})
    wall = time.time() - t0
    sys.stdout.write(p.stdout)
    sys.stderr.write(p.stderr)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.strip()}")
    m = re.search(r"gpu kernels: median ([0-9.]+) ms \(min ([0-9.]+)", p.stdout)
    g = re.search(r"gpu: (.*), (bf16|fp16) inputs", p.stdout)
    return {"median_ms": float(m.group(1)) if m else None, "min_ms": float(m.group(2)) if m else None,
            "wall_s": wall, "gpu": g.group(1) if g else None}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--n", default="16384,65536,131072")
    ap.add_argument("--heads", type=int, default=24)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--rows", type=int, default=256, help="sampled query rows per head for the errors")
    ap.add_argument("--cpu-max-n", type=int, default=16384)
    ap.add_argument("--exact-max-n", type=int, default=131072)
    ap.add_argument("--json", default="gpu-compare.json")
    ap.add_argument("--tmp", default=None)
    ap.add_argument("--timeout", type=int, default=300)
    a = ap.parse_args()
    dev = torch.device("cuda")
    props = torch.cuda.get_device_properties(0)
    report = {"gpu": props.name, "torch": torch.__version__, "cuda": torch.version.cuda, "heads": a.heads, "d": a.d,
              "batch": 1, "dtype": "bf16", "repeats": a.repeats, "rows_per_head_for_error": a.rows, "results": []}
    print(f"GPU {props.name}, torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
    tmp = tempfile.mkdtemp(dir=a.tmp)
    for n in [int(x) for x in a.n.split(",")]:
        torch.manual_seed(n)
        q, k, v = (torch.randn(1, a.heads, n, a.d, device=dev, dtype=torch.bfloat16) for _ in range(3))
        files = [os.path.join(tmp, f"{x}.npy") for x in "qkv"]
        for t, f in zip((q, k, v), files):
            np.save(f, t.float().cpu().numpy())
        gen = torch.Generator().manual_seed(7)
        rows = sorted(torch.randperm(n, generator=gen)[: min(a.rows, n)].tolist())
        for causal in (False, True):
            entry = {"n": n, "causal": causal}
            ref = reference_rows(q, k, v, rows, causal)
            med, mn = cuda_time(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal), a.repeats)
            o = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            entry["sdpa"] = {"median_ms": med, "min_ms": mn, "tflops": attention_flops(n, a.heads, a.d, causal) / med / 1e9,
                             "error": rel_err(o[0, :, rows, :], ref)}
            del o
            out = os.path.join(tmp, "o.npy")
            for mode in ("hyper", "exact"):
                if mode == "exact" and n > a.exact_max_n:
                    continue
                try:
                    r = run_ours(a.bin, files, out, "cuda", mode, causal, a.repeats, {}, a.timeout)
                    og = torch.from_numpy(np.load(out)).to(dev)
                    r["error"] = rel_err(og[0, :, rows, :], ref)
                    if mode == "exact":
                        r["tflops"] = attention_flops(n, a.heads, a.d, causal) / r["median_ms"] / 1e9
                        r["fraction_of_sdpa_tflops"] = r["tflops"] / entry["sdpa"]["tflops"]
                    else:
                        r["speedup_vs_sdpa"] = med / r["median_ms"]
                    report["our_gpu"] = r.pop("gpu")
                    entry[f"gpu_{mode}"] = r
                    if mode == "hyper" and n <= a.cpu_max_n:
                        c = run_ours(a.bin, files, out, "cpu", mode, causal, 0, {}, a.timeout)
                        oc = torch.from_numpy(np.load(out)).to(dev)
                        entry["cpu_hyper"] = {"wall_s": c["wall_s"], "error": rel_err(oc[0, :, rows, :], ref),
                                              "max_abs_diff_gpu_vs_cpu": float((og - oc).abs().max()),
                                              "rel_diff_gpu_vs_cpu": float(torch.linalg.norm((og - oc).flatten()) / torch.linalg.norm(oc.flatten()))}
                except Exception as e:  # keep going: the report says what failed
                    entry[f"gpu_{mode}"] = {"failed": str(e)[:2000]}
                print(json.dumps(entry), flush=True)
            report["results"].append(entry)
            with open(a.json, "w") as f:
                json.dump(report, f, indent=1)
        del q, k, v
        for f in files:
            os.unlink(f)
        torch.cuda.empty_cache()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
