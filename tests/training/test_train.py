"""`train(cfg)` on the real config tree, with outputs in tmp dirs."""

from __future__ import annotations

import json

import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict, read_write

from vla_lab.cli.hydra_app import compose
from vla_lab.data.synthetic import make_demo_file
from vla_lab.training.run_dir import RunDirExistsError
from vla_lab.training.train import train


def _cfg(tmp_path, data_file, *overrides, run_name="run"):
    cfg = compose("train", [f"data.sources=[{{path: {data_file}}}]", f"paths.root_dir={tmp_path}",
                            f"run_name={run_name}", *overrides], return_hydra_config=True)
    out = tmp_path / "outputs" / "train" / run_name
    with open_dict(cfg), read_write(cfg):
        cfg.hydra.runtime.output_dir = str(out)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, out


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return make_demo_file(tmp_path_factory.mktemp("data") / "demos.hdf5", num_demos=6, length=(6, 10),
                          image_size=64, seed=0)


def test_fast_dev_run_writes_the_run_directory(tmp_path, data_file):
    cfg, run = _cfg(tmp_path, data_file, "debug=fast")
    train(cfg)
    for name in ("config.yaml", "config.json", "training_log.csv", "summary.json"):
        assert (run / name).is_file(), name
    final = run / "final"
    assert (final / "data_processor.json").is_file() and (final / "config.json").is_file()
    processor = json.loads((final / "data_processor.json").read_text())
    assert processor["image_size"] == 224 and processor["eval_crop_area"] == pytest.approx(0.9)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 1 and summary["trainable_params"] > 0
    assert "train/loss" in summary["final"]
    assert json.loads((run / "config.json").read_text())["data"]["batch_size"] == 2


def test_an_existing_run_directory_is_never_overwritten(tmp_path, data_file):
    cfg, run = _cfg(tmp_path, data_file, "debug=fast")
    train(cfg)
    before = (run / "config.yaml").read_text()
    cfg2, _ = _cfg(tmp_path, data_file, "debug=fast", "data.batch_size=3")
    with pytest.raises(RunDirExistsError, match="already holds a run"):
        train(cfg2)
    assert (run / "config.yaml").read_text() == before


def test_unknown_eval_task_fails_before_training(tmp_path, data_file):
    from vla_lab.config.errors import ConfigError

    cfg, run = _cfg(tmp_path, data_file, "debug=fast", "eval=quick", "eval.tasks=[fly_to_moon]")
    with pytest.raises(ConfigError, match="eval.tasks: unknown task 'fly_to_moon'; valid: reach_target"):
        train(cfg)
    assert not (run / "final").exists()
