"""How fast does the tiny fused ViT of ``openvla_tiny_128`` learn *where* the instructed object is,
depending on how its patch features are read out?

The vision backbone of the demo's OpenVLA (DINOv2 + SigLIP towers, random init) is trained with an L1
loss to regress ``obs/object_pos`` (recorded by ``vla-collect record_object_pos=true``) from the
agent-view image alone. Only the readout differs:

- ``mean``: average over patches, what uniform attention (the start of training) gives the LLM;
- ``attn``: one learnt query attending over the patches (attention pooling, SigLIP's MAP head);
- ``flat``: per-patch projection to 16 features, flattened: position-specific weights per patch.

Held-out error per axis (cm) every 100 steps, against the error of always guessing the mean.

    python experiments/demo_learnability/vit_readout_probe.py reach_grid.hdf5 --readout flat \
        [--pos-embed-init sincos] [--weight-init jax] [--patch-size 32] [--steps 400]
"""

from __future__ import annotations

import argparse
import json
import time

import h5py
import numpy as np
import torch
from torch import nn

from vla_lab.policies.openvla.backbone_openvla import PrismaticVisionBackbone
from vla_lab.policies.openvla.configuration_openvla import DINOV2_ID, SIGLIP_ID, ViTSpec

WIDTH = 128  # two towers of 64


def load(path: str, camera: str = "agentview") -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    images, positions, episode = [], [], []
    with h5py.File(path, "r") as f:
        demos = sorted(f["data"], key=lambda k: int(k.split("_")[-1]))
        if "object_pos" not in f["data"][demos[0]]["obs"]:
            raise SystemExit(f"{path} has no obs/object_pos: collect with record_object_pos=true")
        for e, k in enumerate(demos):
            obs = f["data"][k]["obs"]
            images.append(obs[f"{camera}_rgb"][:])
            positions.append(obs["object_pos"][:])
            episode += [e] * len(positions[-1])
    images = torch.from_numpy(np.concatenate(images)).permute(0, 3, 1, 2)
    return images, torch.from_numpy(np.concatenate(positions)).float(), np.array(episode)


class Readout(nn.Module):
    def __init__(self, kind: str, n_patches: int):
        super().__init__()
        self.kind = kind
        if kind == "flat":
            self.pre = nn.Sequential(nn.LayerNorm(WIDTH), nn.Linear(WIDTH, 16), nn.Flatten(1))
            features = 16 * n_patches
        else:
            self.pre = nn.LayerNorm(WIDTH)
            features = WIDTH
        if kind == "attn":
            self.attn = nn.MultiheadAttention(WIDTH, 4, batch_first=True)
            self.query = nn.Parameter(torch.randn(1, 1, WIDTH))
        self.mlp = nn.Sequential(nn.Linear(features, 256), nn.GELU(), nn.Linear(256, 3))

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        h = self.pre(patches)
        if self.kind == "mean":
            h = h.mean(1)
        elif self.kind == "attn":
            h = self.attn(self.query.expand(len(h), 1, WIDTH), h, h)[0][:, 0]
        return self.mlp(h)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("file")
    parser.add_argument("--readout", choices=("mean", "attn", "flat"), default="flat")
    parser.add_argument("--pos-embed-init", choices=("sincos",), default=None)
    parser.add_argument("--weight-init", choices=("", "jax"), default="")
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", help="write the trained towers' state dict (vision_backbone.*) here")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    images, pos, episode = load(args.file)
    val = episode % 10 == 0
    train_idx, val_idx = np.where(~val)[0], np.where(val)[0]
    mean, std = pos[train_idx].mean(0), pos[train_idx].std(0) + 1e-6
    size = images.shape[-1]
    common = dict(
        img_size=size, patch_size=args.patch_size, embed_dim=64, depth=3, num_heads=2,
        pos_embed_init=args.pos_embed_init, weight_init=args.weight_init,
    )  # fmt: skip
    backbone = PrismaticVisionBackbone(
        [ViTSpec(DINOV2_ID, init_values=1.0, **common), ViTSpec(SIGLIP_ID, **common)]
    )
    readout = Readout(args.readout, (size // args.patch_size) ** 2)
    opt = torch.optim.AdamW([*backbone.parameters(), *readout.parameters()], 1e-3)

    def predict(idx) -> torch.Tensor:
        x = images[idx].float() / 255
        return readout(backbone(torch.cat([(x - 0.45) / 0.25, (x - 0.5) / 0.5], 1)))

    guess_cm = (100 * (pos[val_idx] - mean).abs().mean(0)).tolist()
    started, last = time.time(), None
    for step in range(args.steps + 1):
        if step % 100 == 0:
            with torch.no_grad():
                p = torch.cat([predict(v) for v in np.array_split(val_idx, 10)]) * std + mean
            err = (100 * (p - pos[val_idx]).abs().mean(0)).tolist()
            last = {"step": step, "seconds": round(time.time() - started),
                    "error_cm_per_axis": [round(v, 2) for v in err], "guess_mean_cm": [round(v, 2) for v in guess_cm]}  # fmt: skip
            print(json.dumps(last), flush=True)
        if step == args.steps:
            break
        b = rng.choice(train_idx, args.batch)
        loss = (predict(b) - (pos[b] - mean) / std).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    if args.save:
        torch.save(backbone.state_dict(), args.save)
    print(json.dumps({"file": args.file, **vars(args), "final": last}))


if __name__ == "__main__":
    main()
