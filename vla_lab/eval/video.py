"""Episode videos (animated GIF: Pillow writes them, no video codec needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def save_gif(frames: list[np.ndarray], path: Path, fps: int = 20) -> Path:
    images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return path
