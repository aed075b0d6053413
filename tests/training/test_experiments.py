"""Every `conf/experiment/*.yaml` composes with the real config tree and trains in a fast-dev run on
tiny synthetic data (new experiment files are picked up by the glob)."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf, open_dict

from vla_lab.config import CONF_DIR
from vla_lab.data.synthetic import make_demo_file

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return make_demo_file(
        tmp_path_factory.mktemp("data") / "demos.hdf5", num_demos=6, length=(6, 10), image_size=32, seed=0
    )


def _experiment_cfg(tmp_path, data_file, name: str, *extra: str):
    """The experiment as composed by vla-train, with its data replaced by a tiny synthetic file and
    its outputs in tmp_path; a pretrained base it names is dropped (it lives in outputs/ of a real run)."""
    from .test_train import _cfg

    cfg, _ = _cfg(tmp_path, data_file, f"experiment={name}", *extra, run_name=f"exp_{name}")
    with open_dict(cfg):
        if cfg.model.get("pretrained"):
            cfg.model.pretrained = None
    return cfg


def _leaves(d, prefix=""):
    items = enumerate(d) if isinstance(d, list) else d.items()
    for k, v in items:
        # lists of nodes (e.g. model.vision) are checked field by field: their schema adds defaults
        if isinstance(v, dict) or (isinstance(v, list) and v and isinstance(v[0], dict)):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def test_there_are_experiments():
    assert EXPERIMENTS


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes(name, tmp_path, data_file):
    cfg = _experiment_cfg(tmp_path, data_file, name)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    # every literal value the experiment sets lands in the composed config (those this test replaces aside)
    raw = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "experiment" / f"{name}.yaml"), resolve=False)
    raw.pop("defaults", None)
    replaced = {"run_name", "data.sources", "model.pretrained"}
    for key, value in _leaves(raw):
        if key not in replaced and not (isinstance(value, str) and "${" in value):
            assert OmegaConf.select(OmegaConf.create(resolved), key) == value, key
    assert [s["path"] for s in resolved["data"]["sources"]] == [str(data_file)]
    assert resolved["paths"]["output_dir"].startswith(str(tmp_path))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_trains_in_a_fast_dev_run(name, tmp_path, data_file):
    from vla_lab.training.train import train

    cfg = _experiment_cfg(tmp_path, data_file, name, "debug=fast")
    assert not cfg.eval.enabled and cfg.trainer.fast_dev_run
    value = train(cfg)
    run = tmp_path / "outputs" / "train" / f"exp_{name}"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 1 and value == pytest.approx(summary["final"]["val/loss"])
    assert (run / "final" / "data_processor.json").is_file()
    saved = json.loads((run / "config.json").read_text())
    assert saved["peft"]["method"] == cfg.peft.method and saved["model"]["family"] == cfg.model.family
