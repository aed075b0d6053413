"""The localization warm-up of from-scratch vision towers (``vision_pretrain``), on the real config
tree and a synthetic file whose images show where the end effector is."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import train_cfg as _cfg
from vla_lab.config.errors import ConfigError
from vla_lab.data.synthetic import make_demo_file
from vla_lab.training.train import train
from vla_lab.training.vision_pretrain import PatchGridReadout, VisionPretrainConfig, check_applicable


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return make_demo_file(
        tmp_path_factory.mktemp("data") / "demos.hdf5", num_demos=40, length=(8, 12), image_size=64, seed=3
    )


WARMUP = (
    "eval=none", "+trainer.max_steps=1", "data.num_workers=0", "callbacks.progress_bar=false", "optimized_metric=null",
    "model=openvla_tiny_128_sincos", "model.action_head=l1_chunk", "model.chunk_size=2",
    "data.image_size=128", "data.batch_size=16", "data.aux_keys=[ee_pos]",
    "vision_pretrain.steps=150", "vision_pretrain.target=ee_pos", "vision_pretrain.log_every=50",
)  # fmt: skip


@pytest.mark.timeout(300)
def test_warm_up_teaches_the_towers_where_the_gripper_is_before_training(tmp_path, data_file):
    cfg, run = _cfg(tmp_path, data_file, *WARMUP)
    train(cfg)
    report = json.loads((run / "vision_pretrain.json").read_text())
    steps = [row["step"] for row in report["history"]]
    assert steps == [0, 50, 100, 150] and report["target"] == "ee_pos"
    first, last = report["history"][0]["val_error"], report["history"][-1]["val_error"]
    assert last < 0.8 * first and last < report["val_error_of_mean_guess"], report
    assert json.loads((run / "summary.json").read_text())["global_step"] == 1  # then the VLA trains


def test_fast_dev_run_caps_the_warm_up_at_one_step(tmp_path, data_file):
    cfg, run = _cfg(tmp_path, data_file, "debug=fast", *WARMUP[5:])
    train(cfg)
    assert [row["step"] for row in json.loads((run / "vision_pretrain.json").read_text())["history"]] == [
        0,
        1,
    ]


def test_readout_weights_differ_per_patch():
    torch.manual_seed(0)
    readout = PatchGridReadout(n_patches=4, width=8, out_dim=2, patch_features=3, vocab_size=10)
    background, feature = torch.randn(8), torch.randn(8)
    x = background.repeat(1, 4, 1)
    x[0, 0] = feature
    moved = background.repeat(1, 4, 1)
    moved[0, 3] = feature  # the same content in another patch
    assert not torch.allclose(readout(x, [[1, 2]]), readout(moved, [[1, 2]]), atol=1e-4)
    # the instruction modulates the features (FiLM), once its embedding has moved off zero
    torch.nn.init.normal_(readout.words.weight)
    assert not torch.allclose(readout(x, [[1, 2]]), readout(x, [[3]]), atol=1e-4)


@pytest.mark.parametrize(
    ("model", "aux_keys", "match"),
    [
        ({"family": "smolvla"}, ["object_pos"], "model.family"),
        ({"family": "openvla", "pretrained": "/runs/base/best"}, ["object_pos"], "model.pretrained"),
        ({"family": "openvla"}, [], r"data.aux_keys \(now \[\]\)"),
    ],
)
def test_warm_up_that_cannot_run_is_refused_naming_the_field(model, aux_keys, match):
    with pytest.raises(ConfigError, match=match):
        check_applicable(VisionPretrainConfig(steps=10), model, aux_keys)
    check_applicable(VisionPretrainConfig(steps=0), model, aux_keys)  # off: nothing to check


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="vision_pretrain.steps"):
        VisionPretrainConfig(steps=-1)
    with pytest.raises(ConfigError, match="lr"):
        VisionPretrainConfig(lr=0)
