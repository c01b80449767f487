"""GPU-only checks, run on a lent CUDA machine (`.ci/gpu_check.sh`); CI has no GPU.

1. bf16 feature extraction on CUDA agrees with fp32 on the CPU.
2. The evaluator gives the same numbers on CUDA and CPU.
3. A tiny Stage 2 run trains on CUDA (bf16, fused Adam) with finite losses.
"""
import sys
import tempfile

import torch

from clipfh_utils.config import Stage2Cfg, build
from clipfh_utils.evaluation import rank_metrics
from clipfh_utils.features import embed_images
from clipfh_utils.models import load_clip
from clipfh_utils.train_stage2 import TrainData, load_log, train_stage2

cuda, cpu = torch.device("cuda"), torch.device("cpu")
ok = True

torch.manual_seed(0)
clip = load_clip("ViT-B-16", None, cpu)
x = torch.randint(0, 256, (16, 3, 224, 224), dtype=torch.uint8)
f_cpu = embed_images(clip.model.encode_image, x, clip.mean, clip.std, cpu)
clip.model.to(cuda)
f_gpu = embed_images(clip.model.encode_image, x, clip.mean, clip.std, cuda, amp=True)
cos = (f_cpu * f_gpu).sum(1).min().item()
print(f"[1] bf16 CUDA vs fp32 CPU features: min cosine {cos:.5f}")
ok &= cos > 0.99

sim = torch.randn(300, 80)
q, g = torch.randint(0, 40, (300,)), torch.cat([torch.arange(40), torch.randint(0, 40, (40,))])
for ap in ("standard", "trapezoid"):
    a, b = rank_metrics(sim, q, g, ap=ap), rank_metrics(sim.to(cuda), q.to(cuda), g.to(cuda), ap=ap)
    same = all(abs(a[k] - b[k]) < 1e-3 for k in a)
    print(f"[2] evaluator CPU vs CUDA ({ap}): {'same' if same else 'DIFFERENT'} {a}")
    ok &= same

cfg = build(Stage2Cfg, {"name": "gpu", "image_size": [64, 64], "amp": True, "compile": False,
                        "prompt": {"epochs": 2, "batch_size": 8},
                        "finetune": {"epochs": 2, "p": 4, "k": 4, "lr": 1e-3, "milestones": [1],
                                     "warmup_epochs": 1}}, "gpu")
tiny = load_clip("tiny-vit", None, cuda)
imgs = torch.randint(0, 256, (64, 3, 64, 64), dtype=torch.uint8, device=cuda)
labels = torch.arange(8, device=cuda).repeat_interleave(8)
data = TrainData(imgs, labels, [str(i) for i in range(8)], imgs[::8].clone(), torch.arange(8, device=cuda))
with tempfile.TemporaryDirectory() as d:
    res = train_stage2(cfg, tiny, data, d, cuda, seed=0)
    log = load_log(d)
finite = bool(torch.isfinite(torch.tensor(log["total"].dropna().values)).all())
print(f"[3] tiny Stage 2 on CUDA: {len(log)} logged steps, finite={finite}, "
      f"last total {log['total'].dropna().iloc[-1]:.3f}")
ok &= finite
print("GPU CHECKS", "PASSED" if ok else "FAILED")
sys.exit(0 if ok else 1)
