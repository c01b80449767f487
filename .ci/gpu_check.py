"""GPU-only checks, run on a lent CUDA machine (`.ci/gpu_check.sh`); CI has no GPU, so it runs
them as a dry run with the CPU standing in (CLIPFH_CHECK_DEVICE=cpu, tests/test_gpu_scripts.py).

1. bf16 feature extraction on CUDA agrees with fp32 on the CPU.
2. The evaluator gives the same numbers on CUDA and CPU.
3. A tiny CLIP-ReID run trains on CUDA through the shared loop (bf16, fused Adam, compiled with
   CUDA graphs: epochs, checkpoints and the monitor in between) with finite losses, and a finished
   seed reloads to the same features.
4. The same for a tiny PromptSG run (Stage 3), in both inference modes.
"""
import os
import sys
import tempfile
from pathlib import Path

import torch

from clipfh_utils.backbones import embed_images, load_clip
from clipfh_utils.config import build
from clipfh_utils.evaluation import rank_metrics
from clipfh_utils.methods import BuildContext
from clipfh_utils.methods.clip_reid import METHOD
from clipfh_utils.methods.promptsg import METHOD as PROMPTSG
from clipfh_utils.pipeline.experiments import train_or_load
from clipfh_utils.training import TrainData, load_log

# CLIPFH_CHECK_DEVICE=cpu runs the same checks on the CPU (a dry run of this script where CI has no GPU)
cuda, cpu = torch.device(os.environ.get("CLIPFH_CHECK_DEVICE", "cuda")), torch.device("cpu")
ok = True

torch.manual_seed(0)
clip = load_clip("ViT-B-16", None, cpu)
x = torch.randint(0, 256, (16, 3, 224, 224), dtype=torch.uint8)
f_cpu = embed_images(clip.model.encode_image, x, clip.mean, clip.std, cpu)
clip.model.to(cuda)
f_gpu = embed_images(clip.model.encode_image, x, clip.mean, clip.std, cuda, amp=True)
cos = (f_cpu * f_gpu).sum(1).min().item()
print(f"[1] bf16 {cuda.type} vs fp32 cpu features: min cosine {cos:.5f}")
ok &= cos > 0.99

sim = torch.randn(300, 80)
q, g = torch.randint(0, 40, (300,)), torch.cat([torch.arange(40), torch.randint(0, 40, (40,))])
for ap in ("standard", "trapezoid"):
    a, b = rank_metrics(sim, q, g, ap=ap), rank_metrics(sim.to(cuda), q.to(cuda), g.to(cuda), ap=ap)
    same = all(abs(a[k] - b[k]) < 1e-3 for k in a)
    print(f"[2] evaluator cpu vs {cuda.type} ({ap}): {'same' if same else 'DIFFERENT'} {a}")
    ok &= same

def train_and_reload(method, cfg, backbone):
    """Train a tiny run on CUDA through the shared loop, then reload the finished seed: the step
    log, the epoch log and each time's features per inference mode."""
    imgs = torch.randint(0, 256, (64, 3, 64, 64), dtype=torch.uint8, device=cuda)
    labels = torch.arange(8, device=cuda).repeat_interleave(8)
    data = TrainData(imgs, labels, [str(i) for i in range(8)], imgs[::8].clone(), torch.arange(8, device=cuda))
    with tempfile.TemporaryDirectory() as d:
        feats = []
        for _ in range(2):  # train, then reload the finished seed
            tiny = load_clip(backbone, None, cuda, (64, 64))
            ctx = BuildContext(tiny, cuda, 0, torch.Generator(device=cuda).manual_seed(0), True)
            model, _ = train_or_load(method, cfg, ctx, lambda: data, 8, Path(d),
                                     resume=False, progress=False, label=cfg.name)
            feats.append({m: embed_images(fn, imgs[:8], tiny.mean, tiny.std, cuda, amp=True)
                          for m, fn in method.embedders(cfg, model).items()})
        return load_log(d), load_log(d, per="epoch"), feats


QUICK = "--quick" in sys.argv  # [1] and [2] only: the full-size runs of gpu_study.py train compiled
for backbone, mode in () if QUICK else (("tiny-vit", "reduce-overhead"), ("tiny-rn", "default")):
    cfg = build(METHOD.config_cls, {
        "name": "gpu", "backbone": {"name": backbone}, "image_size": [64, 64], "amp": True, "compile": True,
        "compile_mode": mode, "prompt": {"epochs": 2, "batch_size": 8},
        "finetune": {"epochs": 3, "p": 4, "k": 4, "lr": 1e-3, "milestones": [2], "warmup_epochs": 1,
                     "monitor_every": 1}}, "gpu")
    log, epochs, feats = train_and_reload(METHOD, cfg, backbone)
    finite = bool(torch.isfinite(torch.tensor(log["total"].dropna().values)).all())
    same = torch.allclose(feats[0][""], feats[1][""], atol=1e-3)
    print(f"[3] tiny CLIP-ReID {backbone} on {cuda.type}, compile {mode}: {len(log)} logged steps, finite={finite}, "
          f"monitor {epochs['val_mAP'].dropna().round(1).tolist()}, reload identical={same}")
    ok &= finite and same

for backbone in () if QUICK else ("tiny-vit", "tiny-rn"):
    cfg = build(PROMPTSG.config_cls, {
        "name": "gpu3", "backbone": {"name": backbone}, "image_size": [64, 64], "amp": True, "compile": True,
        "interaction": {"heads": 2}, "optim": {"epochs": 3, "p": 4, "k": 4, "lr": 1e-3, "new_lr": 1e-3,
                                               "step_size": 2, "monitor_every": 1}}, "gpu3")
    log, epochs, feats = train_and_reload(PROMPTSG, cfg, backbone)
    finite = bool(torch.isfinite(torch.tensor(log[["total", "supcon"]].values)).all())
    same = all(torch.allclose(feats[0][m], feats[1][m], atol=1e-3) for m in feats[0])
    print(f"[4] tiny PromptSG {backbone} on {cuda.type}, bf16, compiled: {len(log)} logged steps, finite={finite}, "
          f"monitor {epochs['val_mAP'].dropna().round(1).tolist()}, modes {sorted(feats[0])}, "
          f"reload identical={same}")
    ok &= finite and same and sorted(feats[0]) == ["composed", "fixed"]
print("GPU CHECKS", "PASSED" if ok else "FAILED")
sys.exit(0 if ok else 1)
