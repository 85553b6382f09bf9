import torch, sys
x = torch.randn(2 * 24 * 131072 * 64, device='cuda').to(torch.bfloat16)  # 805 MB
y = x[: x.numel() // 2]
for name, t in (("sum 805MB", x), ("sum 403MB", y)):
    for _ in range(3): t.sum(dtype=torch.float32)
    s, e = torch.cuda.Event(True), torch.cuda.Event(True); torch.cuda.synchronize()
    s.record()
    for _ in range(20): t.sum(dtype=torch.float32)
    e.record(); torch.cuda.synchronize(); ms = s.elapsed_time(e) / 20
    print(f"{name}: {ms:.4f} ms, {t.numel() * 2 / ms / 1e9:.3f} TB/s read")
z = torch.empty_like(y)
for _ in range(3): z.copy_(y)
s, e = torch.cuda.Event(True), torch.cuda.Event(True); torch.cuda.synchronize(); s.record()
for _ in range(20): z.copy_(y)
e.record(); torch.cuda.synchronize(); ms = s.elapsed_time(e) / 20
print(f"copy 403MB: {ms:.4f} ms, {2 * y.numel() * 2 / ms / 1e9:.3f} TB/s read+write")
