"""How learnable are the demo's actions from its observations, independent of the VLA architecture?

A small convolutional network with FiLM conditioning on the instruction's words and the
proprioceptive state is trained with an L1 loss on a demonstration file and evaluated on held-out
episodes (every 10th). If this probe cannot predict the actions, no tiny VLA trained for the same
number of samples will either: the bottleneck is the data (observation, scale), not the model.

    python experiments/demo_learnability/cnn_probe.py outputs/demo/data/studio/part-0.hdf5 --steps 3000

``--keypoints`` swaps the flattened feature map for a spatial soft-argmax (image coordinates of 32
learnt keypoints, the classic visuomotor encoder); ``--aux-weight W`` adds an auxiliary L1 loss on the
instructed object's position (``obs/object_pos``, recorded by ``vla-collect record_object_pos=true``)
and reports its held-out error in cm.
"""

from __future__ import annotations

import argparse
import json
import time

import h5py
import numpy as np
import torch
from torch import nn

STATE_KEYS = ("ee_pos", "ee_ori", "gripper_width")


def load(path: str, camera: str = "agentview", state_keys=STATE_KEYS):
    images, actions, words, states, episode, tasks = [], [], [], [], [], []
    with h5py.File(path, "r") as f:
        demos = sorted(f["data"], key=lambda k: int(k.split("_")[-1]))
        vocab = sorted({w for k in demos for w in f["data"][k].attrs["language_instruction"].split()})
        index = {w: i for i, w in enumerate(vocab)}
        for e, k in enumerate(demos):
            g = f["data"][k]
            n = len(g["actions"])
            images.append(g[f"obs/{camera}_rgb"][:])
            actions.append(g["actions"][:])
            bag = np.zeros(len(vocab), np.float32)
            bag[[index[w] for w in g.attrs["language_instruction"].split()]] = 1
            words.append(np.repeat(bag[None], n, 0))
            obs = g["obs"]
            states.append(np.concatenate([obs[key][:].reshape(n, -1) for key in state_keys], 1))
            episode += [e] * n
            tasks += [g.attrs["task"]] * n
    cat = lambda xs: torch.from_numpy(np.concatenate(xs))  # noqa: E731
    return (
        cat(images).permute(0, 3, 1, 2), cat(actions), cat(words), cat(states).float(),
        np.array(episode), np.array(tasks),
    )  # fmt: skip


def direction_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Position L1, and sign agreement on the components where the expert clearly moves (|a| > 0.1):
    near-zero labels have no meaningful sign."""
    pred, target = pred[:, :3], target[:, :3]
    moving = target.abs() > 0.1
    agree = (torch.sign(pred) == torch.sign(target))[moving].float().mean()
    return {"position_l1": round((pred - target).abs().mean().item(), 4), "direction": round(agree.item(), 4)}


def load_object_pos(path: str) -> torch.Tensor:
    with h5py.File(path, "r") as f:
        demos = sorted(f["data"], key=lambda k: int(k.split("_")[-1]))
        if "object_pos" not in f["data"][demos[0]]["obs"]:
            raise SystemExit(f"{path} has no obs/object_pos: collect with record_object_pos=true")
        return torch.from_numpy(np.concatenate([f["data"][k]["obs/object_pos"][:] for k in demos])).float()


class SpatialSoftArgmax(nn.Module):
    """(B, C, H, W) → (B, 2C): the expected image coordinates of each channel's softmax."""

    def __init__(self, size: int):
        super().__init__()
        grid = torch.linspace(-1, 1, size)
        self.register_buffer("gx", grid[None, :].expand(size, size).reshape(-1))
        self.register_buffer("gy", grid[:, None].expand(size, size).reshape(-1))

    def forward(self, z):
        att = torch.softmax(z.flatten(2), -1)
        return torch.cat([(att * self.gx).sum(-1), (att * self.gy).sum(-1)], 1)


class Probe(nn.Module):
    def __init__(self, n_words: int, n_state: int, size: int, keypoints: bool = False):
        super().__init__()
        self.keypoints = keypoints
        if keypoints:  # keep a 1/4-resolution map: soft-argmax precision is set by its grid
            self.conv = nn.Sequential(
                nn.Conv2d(3, 32, 5, 2, 2), nn.ReLU(), nn.Conv2d(32, 32, 3, 2, 1), nn.ReLU(),
                nn.Conv2d(32, 64, 3, 1, 1), nn.ReLU(),
            )  # fmt: skip
            self.pool = nn.Sequential(nn.Conv2d(64, 32, 1), SpatialSoftArgmax(size // 4))
            features = 64
        else:
            self.conv = nn.Sequential(
                nn.Conv2d(3, 32, 5, 2, 2), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
                nn.Conv2d(64, 64, 3, 2, 1), nn.ReLU(), nn.Conv2d(64, 64, 3, 2, 1), nn.ReLU(),
            )  # fmt: skip
            self.pool = nn.Flatten(1)
            features = 64 * (size // 16) ** 2
        self.film = nn.Linear(n_words, 128)
        self.trunk = nn.Sequential(nn.Linear(features, 256), nn.ReLU())
        self.object_pos = nn.Linear(256, 3)  # auxiliary output, read only with --aux-weight
        self.head = nn.Sequential(nn.Linear(256 + n_state, 256), nn.ReLU(), nn.Linear(256, 7))

    def forward(self, image, words, state):
        z = self.conv(image.float() / 255)
        gain, bias = self.film(words).chunk(2, -1)
        z = z * (1 + gain[..., None, None]) + bias[..., None, None]
        h = self.trunk(self.pool(z))
        return self.head(torch.cat([h, state], 1)), self.object_pos(h)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("file")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--state", nargs="*", default=list(STATE_KEYS),
        help="proprio keys fed to the probe; without ee_pos the position must come from the image",
    )  # fmt: skip
    parser.add_argument("--keypoints", action="store_true", help="spatial soft-argmax encoder")
    parser.add_argument("--aux-weight", type=float, default=0.0, help="weight of the object-position loss")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    images, actions, words, states, episode, tasks = load(args.file, state_keys=args.state)
    val = episode % 10 == 0
    train_idx, val_idx = np.where(~val)[0], np.where(val)[0]
    net = Probe(words.shape[1], states.shape[1], images.shape[-1], keypoints=args.keypoints)
    obj = load_object_pos(args.file) if args.aux_weight else torch.zeros(len(episode), 3)
    obj_mean, obj_std = obj[train_idx].mean(0), obj[train_idx].std(0) + 1e-6
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    started, rows = time.time(), []
    for step in range(args.steps + 1):
        if step % 500 == 0:
            with torch.no_grad():
                outs = [net(images[v], words[v], states[v]) for v in np.array_split(val_idx, 20)]
            pred = torch.cat([o[0] for o in outs])
            rows.append({"step": step, "seconds": round(time.time() - started),
                         "val": direction_metrics(pred, actions[val_idx])})  # fmt: skip
            if args.aux_weight:
                guess = torch.cat([o[1] for o in outs]) * obj_std + obj_mean
                rows[-1]["object_err_cm"] = round(100 * (guess - obj[val_idx]).norm(dim=1).mean().item(), 2)
            for task in np.unique(tasks):
                sel = tasks[val_idx] == task
                rows[-1][str(task)] = direction_metrics(pred[sel], actions[val_idx][sel])
            print(json.dumps(rows[-1]), flush=True)
        if step == args.steps:
            break
        b = rng.choice(train_idx, args.batch)
        pred, guess = net(images[b], words[b], states[b])
        loss = (pred - actions[b]).abs().mean()
        if args.aux_weight:
            loss = loss + args.aux_weight * (guess - (obj[b] - obj_mean) / obj_std).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(
        json.dumps(
            {"file": args.file, "frames": len(episode), "episodes": int(episode.max() + 1), "final": rows[-1]}
        )
    )


if __name__ == "__main__":
    main()
