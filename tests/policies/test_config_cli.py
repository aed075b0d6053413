import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from vla_lab.cli.model import plan_from_cfg
from vla_lab.config import CONF_DIR
from vla_lab.config.compose import compose
from vla_lab.policies.config import model_config_from, peft_spec_from

MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
PEFTS = sorted(p.stem for p in (CONF_DIR / "peft").glob("*.yaml"))
COMPOSE_ERRORS = (ConfigCompositionException, ValidationError, ConfigAttributeError, ConfigKeyError)


def test_every_preset_composes_into_its_typed_schema():
    assert {"openvla_tiny", "openvla_small", "openvla_7b"} <= set(MODELS)
    assert {"none", "lora_openvla", "lora_light", "qlora_nf4", "qlora_int8"} <= set(PEFTS)
    for model in MODELS:
        cfg = compose("model", [f"model={model}"])
        assert cfg.model.family in ("openvla", "smolvla")
    for peft in PEFTS:
        assert compose("model", [f"peft={peft}"]).peft.method in ("none", "lora", "qlora")


def test_recipes_have_the_documented_values():
    light = compose("model", ["peft=lora_light"]).peft
    assert (light.r, light.alpha, list(light.target_modules)) == (16, 32, ["q_proj", "v_proj"])
    oft = compose("model", ["peft=lora_openvla"]).peft
    assert (oft.r, oft.alpha, list(oft.target_modules)) == (32, 16, ["all-linear"])


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("model.chunk_size=abc", "chunk_size"),
        ("model.chunk_sise=4", "chunk_sise"),
        ("peft.r=big", "r"),
        ("peft.rank=4", "rank"),
        ("model.text.hidden_size=1.5", "hidden_size"),
    ],
)
def test_wrong_type_or_unknown_key_fails_at_compose_naming_the_field(override, field):
    with pytest.raises(COMPOSE_ERRORS, match=field):
        compose("model", ["model=openvla_tiny", override])


@pytest.mark.parametrize(
    ("override", "field"), [("+model.chunk_sise=4", "chunk_sise"), ("+peft.rank=4", "rank")]
)
def test_keys_forced_in_with_plus_fail_when_the_config_is_built(override, field):
    cfg = compose("model", ["model=openvla_tiny", override])
    with pytest.raises(COMPOSE_ERRORS, match=field):
        model_config_from(cfg.model)
        peft_spec_from(cfg.peft)


def plan(model, peft):
    return plan_from_cfg(compose("model", [f"model={model}", f"peft={peft}"]))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("peft", PEFTS)
def test_planner_answers_for_tiny_with_every_peft(peft):
    out = plan("openvla_tiny", peft)
    assert out["total_params"] > 0 and 0 < out["trainable_params"] <= out["total_params"]
    mem = out["memory"]
    assert set(mem) == {"bf16", "int8", "nf4"}
    assert mem["nf4"]["weights_gib"] < mem["int8"]["weights_gib"] < mem["bf16"]["weights_gib"]
    if peft == "none":
        assert out["trainable_params"] == out["total_params"]
    else:
        assert out["trainable_params"] < 0.5 * out["total_params"]


@pytest.mark.timeout(120)
def test_planner_official_openvla_numbers():
    full = plan("openvla_7b", "none")
    assert full["total_params"] == 7_541_237_184
    # bf16 weights of 7.54B parameters: 14.05 GiB.
    assert full["memory"]["bf16"]["weights_gib"] == pytest.approx(7_541_237_184 * 2 / 2**30, rel=1e-3)
    q = plan("openvla_7b", "qlora_nf4")
    assert q["memory"]["nf4"]["training_gib"] < 24 < full["memory"]["bf16"]["training_gib"]


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("peft", PEFTS)
def test_planner_answers_for_every_model_and_peft(model, peft):
    out = plan(model, peft)
    assert out["total_params"] > 0 and out["trainable_params"] > 0


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_console_script_prints_json():
    exe = Path(sys.executable).with_name("vla-model")
    if not exe.exists():
        pytest.skip("vla-model is not installed in this environment (pip install -e .)")
    res = subprocess.run(
        [str(exe), "model=openvla_tiny", "peft=lora_light"],
        capture_output=True,
        text=True,
        timeout=110,
        check=True,
    )
    out = json.loads(res.stdout)
    assert out["model"] == "openvla_tiny" and out["peft"] == "lora_light"
    assert {"total_params", "trainable_params", "memory", "assumptions"} <= set(out)
