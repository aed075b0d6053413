import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as F

from vla_lab.config.schemas import AugmentationConfig, to_schema
from vla_lab.data.format import ActionSpace
from vla_lab.data.transforms import GeometricAugment, build_image_transform, eval_crop_area


def _aug(**kw):
    return to_schema(AugmentationConfig, kw, where="augmentation")


def _gradient(size=40):
    x = torch.arange(size, dtype=torch.uint8).repeat(size, 1) * 5
    return torch.stack([x, x.T, torch.full_like(x, 9)])


def test_eval_transform_center_crops_the_training_area():
    aug = _aug(crop={"scale": [0.81, 0.81]})
    assert eval_crop_area(aug) == pytest.approx(0.81)
    img = _gradient(40)
    out = build_image_transform(aug, 36, train=False)(img)
    # sqrt(0.81) * 40 = 36: a pure center crop, no resampling
    expected = img[:, 2:38, 2:38].float() / 255
    assert out.shape == (3, 36, 36) and out.dtype == torch.float32
    torch.testing.assert_close(out, expected)


def test_eval_transform_is_deterministic_and_train_is_random():
    aug = _aug(crop={"scale": [0.5, 0.9]})
    img = torch.randint(0, 255, (3, 48, 48), dtype=torch.uint8)
    ev = build_image_transform(aug, 32, train=False)
    assert torch.equal(ev(img), ev(img))
    tr = build_image_transform(aug, 32, train=True)
    outs = [tr(img) for _ in range(4)]
    assert all(o.shape == (3, 32, 32) for o in outs)
    assert not all(torch.equal(outs[0], o) for o in outs[1:])


def test_disabled_crop_resizes_only():
    aug = _aug(crop={"enabled": False}, color_jitter={"enabled": False})
    img = _gradient(16)
    for train in (True, False):
        out = build_image_transform(aug, 16, train=train)(img)
        torch.testing.assert_close(out, img.float() / 255)


def test_noise_and_blur_stay_in_range():
    aug = _aug(noise={"enabled": True, "std": 0.5}, blur={"enabled": True, "p": 1.0})
    out = build_image_transform(aug, 24, train=True)(torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8))
    assert out.min() >= 0 and out.max() <= 1


MIRRORABLE = ActionSpace(mirror_negate=[1, 3, 5], planar_dims=[0, 1], yaw_dim=5)


def test_flip_mirrors_image_and_negates_lateral_roll_yaw():
    geo = GeometricAugment(_aug(flip={"enabled": True, "p": 1.0}), MIRRORABLE)
    img = _gradient(8)
    actions = torch.arange(14, dtype=torch.float32).reshape(2, 7) + 1
    images, out = geo({"agentview": img}, actions)
    assert torch.equal(images["agentview"], img.flip(-1))
    expected = actions.clone()
    expected[:, [1, 3, 5]] *= -1
    assert torch.equal(out, expected)


def test_rotation_rotates_planar_action():
    gen = torch.Generator().manual_seed(0)
    geo = GeometricAugment(_aug(rotate={"enabled": True, "degrees": 30.0}), MIRRORABLE, generator=gen)
    actions = torch.tensor([[1.0, 0.0, 0.2, 0, 0, 0.1, 1.0]])
    _, out = geo({"agentview": _gradient(8)}, actions)
    assert torch.linalg.vector_norm(out[0, :2]) == pytest.approx(1.0, abs=1e-6)
    angle = math.degrees(math.atan2(out[0, 1], out[0, 0]))
    assert 0 < abs(angle) <= 30
    assert out[0, 2:].tolist() == pytest.approx(actions[0, 2:].tolist())  # delta yaw is invariant


def test_geometric_augmentation_stays_off_when_the_frame_forbids_it():
    aug = _aug(flip={"enabled": True, "p": 1.0}, rotate={"enabled": True})
    geo = GeometricAugment(aug, ActionSpace())  # no mirror_negate / planar_dims declared
    assert not geo.active


def test_bad_augmentation_fields():
    from vla_lab.config.errors import ConfigError

    with pytest.raises(ConfigError, match="augmentation.color_jitter.hue"):
        _aug(color_jitter={"hue": 0.9})
    with pytest.raises(ConfigError, match="kernel_size"):
        _aug(blur={"kernel_size": 4})
    with pytest.raises(ConfigError, match="Key 'strength' not in 'NoiseConfig'"):
        _aug(noise={"strength": 1})
    np.testing.assert_equal(_aug().crop.scale, [0.9, 0.9])


@pytest.mark.parametrize(
    "kw, reference",
    [
        ({"brightness": 0.0, "contrast": (1.3, 1.3)}, lambda x: F.adjust_contrast(x, 1.3)),
        ({"saturation": (0.6, 0.6)}, lambda x: F.adjust_saturation(x, 0.6)),
        (
            {"contrast": (0.8, 0.8), "saturation": (1.2, 1.2)},
            lambda x: F.adjust_saturation(F.adjust_contrast(x, 0.8), 1.2),
        ),
    ],
)
def test_linear_jitter_equals_torchvision_for_brightness_contrast_saturation(kw, reference):
    from vla_lab.data.transforms import LinearColorJitter

    img = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25
    torch.testing.assert_close(LinearColorJitter(**kw)(img), reference(img), atol=1e-6, rtol=0)


def test_linear_hue_keeps_grays_and_turns_like_torchvision():
    from vla_lab.data.transforms import LinearColorJitter, hue_rotation_matrix

    gray = torch.full((3, 4, 4), 0.4)
    torch.testing.assert_close(torch.einsum("ij,jhw->ihw", hue_rotation_matrix(0.1), gray), gray)
    torch.testing.assert_close(hue_rotation_matrix(0.0), torch.eye(3))
    img = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1)) * 0.6 + 0.2
    for h in (0.05, -0.05):
        jitter = LinearColorJitter(hue=abs(h))
        jitter._draw = lambda lo, hi, h=h: h if (lo, hi) == (-abs(h), abs(h)) else lo
        ours, ref = jitter(img) - img, F.adjust_hue(img, h) - img
        cos = torch.nn.functional.cosine_similarity(ours.flatten(), ref.flatten(), dim=0)
        assert cos > 0.6  # same direction of colour change as the HSV shift


def test_torchvision_jitter_is_selectable():
    aug = _aug(color_jitter={"impl": "torchvision"})
    names = [type(t).__name__ for t in build_image_transform(aug, 16, train=True).transforms]
    assert "ColorJitter" in names and "LinearColorJitter" not in names


@pytest.mark.timeout(60)
def test_colour_jitter_works_when_first_imported_under_a_meta_device_context():
    """Checkpoint loading builds models inside ``with torch.device("meta")``; a module first imported
    there must not keep meta tensors as constants."""
    import subprocess
    import sys

    code = (
        "import torch\n"
        "with torch.device('meta'):\n"
        "    from vla_lab.data.transforms import LinearColorJitter\n"
        "out = LinearColorJitter(0.3, (0.7, 1.3), (0.7, 1.3), 0.05)(torch.rand(3, 8, 8))\n"
        "assert out.device.type == 'cpu' and out.shape == (3, 8, 8)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50)
    assert result.returncode == 0, result.stderr[-2000:]
