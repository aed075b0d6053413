"""Every file in conf/ composes (and resolves), and typed groups reject bad values at compose time."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf, open_dict, read_write

from vla_lab.config import CONF_DIR
from vla_lab.config.compose import compose

ROOTS = sorted(p.stem for p in CONF_DIR.glob("*.yaml"))


def _root_groups(root: str) -> set[str]:
    defaults = yaml.safe_load((CONF_DIR / f"{root}.yaml").read_text()).get("defaults", [])
    return {next(iter(d)).split("@")[0].removeprefix("override ") for d in defaults if isinstance(d, dict)}


def _group_files() -> list[tuple[str, str]]:
    out = []
    for path in sorted(CONF_DIR.rglob("*.yaml")):
        rel = path.relative_to(CONF_DIR)
        if len(rel.parts) > 1:
            out.append(("/".join(rel.parts[:-1]), rel.stem))
    return out


def _compose_and_resolve(root: str, overrides: list[str], tmp_path: Path):
    cfg = compose(
        root,
        overrides + [f"paths.root_dir={tmp_path}"] if "paths" in _root_groups(root) else overrides,
        return_hydra_config=True,
    )
    with open_dict(cfg), read_write(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path / "run")
    HydraConfig.instance().set_config(cfg)
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])  # the job's config, as apps see it
    container = OmegaConf.to_container(job, resolve=True)
    assert container
    return job


def test_there_are_configs_to_check():
    assert "train" in ROOTS and len(_group_files()) >= 15


@pytest.mark.parametrize("root", ROOTS)
def test_root_config_composes(root, tmp_path):
    _compose_and_resolve(root, [], tmp_path)


@pytest.mark.parametrize("group, name", _group_files(), ids=lambda x: x)
def test_group_file_composes_in_a_root_that_uses_the_group(group, name, tmp_path):
    top = group.split("/")[0]
    roots = [r for r in ROOTS if top in _root_groups(r)]
    assert roots, f"conf/{group}/{name}.yaml belongs to no root config's defaults list"
    _compose_and_resolve(roots[0], [f"{group}={name}"], tmp_path)


@pytest.mark.parametrize(
    "override, field",
    [
        ("data.batch_size=eight", "data.batch_size"),
        ("data.chunk_size=1.5", "data.chunk_size"),
        ("augmentation.crop.enabled=maybe", "augmentation.crop.enabled"),
        ("data.filter.min_length=[1]", "data.filter.min_length"),
        ("data.bach_size=8", "data.bach_size"),
        ("augmentation.colour_jitter.hue=0.1", "augmentation.colour_jitter"),
    ],
)
def test_bad_values_fail_at_compose_naming_the_field(override, field):
    with pytest.raises(ConfigCompositionException) as err:
        compose("train", [override])
    text = f"{err.value} {err.value.__cause__}"
    assert field in text


def test_unknown_key_in_a_config_file_fails(tmp_path):
    import shutil

    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "data" / "typo.yaml").write_text("defaults:\n  - _demo_schema\n  - _self_\nbatchsize: 4\n")
    with (
        initialize_config_dir(str(conf), version_base="1.3"),
        pytest.raises(ConfigCompositionException) as err,
    ):
        hydra_compose("train", ["data=typo"])
    assert "Key 'batchsize' not in 'DataConfig'" in str(err.value)
    assert "full_key: data.batchsize" in str(err.value)


def test_data_config_instantiates_with_the_top_level_augmentation(demo_file, tmp_path):
    from hydra.utils import instantiate

    cfg = _compose_and_resolve(
        "train",
        [f"data.sources=[{{path: {demo_file}}}]", "augmentation=strong", "data.num_workers=0"],
        tmp_path,
    )
    dm = instantiate(cfg.data)
    assert dm.cfg.augmentation.noise.enabled and dm.cfg.augmentation.crop.scale == [0.8, 1.0]
    assert dm.cfg.split_seed == cfg.seed
