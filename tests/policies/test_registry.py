"""Policy families as plug-ins: every registered family round-trips through make_policy /
save_pretrained / load_policy, and a family defined here, outside the library, does too (full
weights and adapters) once registered."""

import json
from dataclasses import dataclass, field

import pytest
import torch
from peft import PeftModel
from torch import nn

from tests.policies.conftest import INSTRUCTIONS, model_cfg, norm_entry
from vla_lab.config import keys
from vla_lab.policies import registry
from vla_lab.policies.config import model_config_from
from vla_lab.policies.contract import check_actions
from vla_lab.policies.factory import load_policy, make_policy
from vla_lab.policies.pretrained import PretrainedPolicy
from vla_lab.policies.processor import StepProcessor
from vla_lab.policies.registry import PolicyFamily, register_family, unregister_family
from vla_lab.policies.text_tokenizer import train_bpe_tokenizer

BUILT_IN = [f.name for f in registry.families()]


def observation(config, seed: int = 0, batch: int = 2) -> dict:
    """Images at the size the policy checks (or any, where its processor resizes), instructions and
    a state vector (read by the families that take one)."""
    g = torch.Generator().manual_seed(seed)
    size = getattr(config, "image_size", 64)
    obs = {keys.image_key(cam): torch.rand(batch, 3, size, size, generator=g) for cam in config.cameras}
    obs[keys.TASK] = INSTRUCTIONS[:batch]
    obs[keys.STATE] = torch.rand(batch, getattr(config, "proprio_dim", 0) or 8, generator=g) * 2 - 1
    return obs


def chunk(policy, obs) -> torch.Tensor:
    torch.manual_seed(3)  # flow-matching families draw their starting noise
    return policy.eval().predict_action_chunk(obs)


def test_the_built_in_families_are_registered_from_their_folders():
    assert {"openvla", "smolvla"} <= set(BUILT_IN)
    assert registry.family_for_model_type("prismatic").name == "openvla"
    assert registry.family_for_model_type("smolvla").name == "smolvla"
    assert registry.get_family("openvla").vision_warmup and not registry.get_family("smolvla").vision_warmup
    with pytest.raises(ValueError, match=r"model.family must be one of \[.*'openvla'.*\], got 'nope'"):
        model_config_from({"family": "nope"})


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", BUILT_IN)
def test_every_family_round_trips_through_save_and_load(name, tmp_path):
    """Each family ships a ``<family>_tiny`` preset; built, saved and loaded back it gives the
    same weights and the same chunks."""
    torch.manual_seed(0)
    policy = make_policy(model_cfg(f"{name}_tiny"), corpus=INSTRUCTIONS, norm_stats={"demo": norm_entry()})
    obs = observation(policy.config)
    before = chunk(policy, obs)
    policy.save_pretrained(tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert registry.family_for_model_type(saved.get("model_type") or saved.get("type")).name == name
    loaded = load_policy(tmp_path / "ckpt")
    assert type(loaded) is type(policy) and loaded.config == policy.config
    state, again = policy.model.state_dict(), loaded.model.state_dict()
    assert state.keys() == again.keys() and all(torch.equal(state[k], again[k]) for k in state)
    assert torch.equal(chunk(loaded, obs), before)
    assert loaded.processor.norm_stats == policy.processor.norm_stats


# ---- a family the library does not know ----
@dataclass
class ToyConfig:
    family: str = "toy"
    hidden: int = 8
    chunk_size: int = 2
    action_dim: int = 3
    n_action_steps: int | None = None
    temporal_ensemble_coeff: float | None = None
    cameras: list[str] = field(default_factory=lambda: ["agentview"])
    pretrained: str | None = None


class ToyProcessor(StepProcessor):
    @classmethod
    def from_config(cls, config, tokenizer, norm_stats=None):
        return cls(tokenizer, [{"step": "unnormalize", "mode": "norm_stats[unnorm_key]"}], norm_stats)


class ToyNet(nn.Module):
    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(3, config.hidden), nn.Tanh())
        self.head = nn.Sequential(nn.Linear(config.hidden, config.chunk_size * config.action_dim))


class ToyPolicy(PretrainedPolicy):
    """Mean colour of the image → a chunk: the least a family needs to define."""

    name = "toy"
    config_class = ToyConfig
    processor_class = ToyProcessor

    def __init__(self, config: ToyConfig, processor) -> None:
        super().__init__(config, processor)
        self.model = ToyNet(config)

    def submodels(self) -> dict[str, str]:
        return {"encoder": "encoder", "head": "head"}

    @classmethod
    def new_processor(cls, config, corpus, norm_stats, action_chunks):
        return ToyProcessor.from_config(config, train_bpe_tokenizer(corpus or [], 300, 0), norm_stats)

    def _chunk(self, observation) -> torch.Tensor:
        image = observation[keys.image_key(self.config.cameras[0])]
        flat = self.model.head(self.model.encoder(image.mean(dim=(2, 3))))
        return flat.view(-1, self.config.chunk_size, self.config.action_dim)

    def forward(self, batch):
        action, is_pad = check_actions(batch, self.config.chunk_size, self.config.action_dim)
        loss = (self._chunk(batch) - action).abs()[~is_pad].mean()
        return loss, {"loss": loss.detach()}

    @torch.no_grad()
    def predict_action_chunk(self, observation) -> torch.Tensor:
        return self._chunk(observation)


@pytest.fixture
def toy():
    register_family(PolicyFamily(name="toy", config_class=ToyConfig, policy=ToyPolicy))
    yield
    unregister_family("toy")


def perturb(module: nn.Module, names: str) -> None:
    """Moves parameters whose name contains ``names`` off their initial values (lora_B starts at 0)."""
    with torch.no_grad():
        for n, p in module.named_parameters():
            if names in n:
                p.add_(torch.randn_like(p) * 0.3)


def test_a_family_registered_from_outside_builds_saves_and_loads(toy, tmp_path):
    torch.manual_seed(0)
    policy = make_policy(
        {"family": "toy", "hidden": 16}, corpus=INSTRUCTIONS, norm_stats={"demo": norm_entry(3)}
    )
    assert isinstance(policy, ToyPolicy) and policy.config.hidden == 16
    obs = observation(policy.config)
    before = chunk(policy, obs)
    policy.save_pretrained(tmp_path / "ckpt")
    files = {p.name for p in (tmp_path / "ckpt").iterdir()}
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json"} <= files
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert saved["model_type"] == "toy" and saved["hidden"] == 16 and "demo" in saved["norm_stats"]
    loaded = load_policy(tmp_path / "ckpt")
    assert isinstance(loaded, ToyPolicy) and loaded.config == policy.config
    assert torch.equal(chunk(loaded, obs), before)
    torch.testing.assert_close(
        loaded.processor.unnormalize(before, "demo"), policy.processor.unnormalize(before, "demo")
    )
    # and as a starting point: make_policy with pretrained= loads it
    again = make_policy({"family": "toy", "hidden": 16, "pretrained": str(tmp_path / "ckpt")})
    assert torch.equal(chunk(again, obs), before)


def test_a_family_registered_from_outside_gets_adapters_saved_loaded_and_merged(toy, tmp_path):
    torch.manual_seed(0)
    spec = {"method": "lora", "r": 2, "alpha": 4, "adapt": ["encoder"], "train_full": ["head"]}
    policy = make_policy({"family": "toy"}, spec, corpus=INSTRUCTIONS, norm_stats={"demo": norm_entry(3)})
    assert isinstance(policy.model, PeftModel)
    trainable = {n for n, p in policy.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or ".head." in n for n in trainable)
    perturb(policy.model, "lora_B")
    perturb(policy.model, "head")
    obs = observation(policy.config)
    before = chunk(policy, obs)
    policy.save_pretrained(tmp_path / "adapter")
    files = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert {
        "adapter_config.json",
        "adapter_model.safetensors",
        "trained_modules.safetensors",
        "base",
    } <= files
    assert "model.safetensors" not in files
    saved = json.loads((tmp_path / "adapter" / "config.json").read_text())
    assert saved["base_model"] == "base" and saved["peft"]["method"] == "lora"

    loaded = load_policy(tmp_path / "adapter")
    assert isinstance(loaded.model, PeftModel)
    assert torch.equal(chunk(loaded, obs), before)
    loaded.merge_adapters()
    assert not isinstance(loaded.model, PeftModel)
    torch.testing.assert_close(chunk(loaded, obs), before)
    loaded.save_pretrained(tmp_path / "merged")
    assert (tmp_path / "merged" / "model.safetensors").exists()
    torch.testing.assert_close(chunk(load_policy(tmp_path / "merged"), obs), before)


def test_an_unknown_checkpoint_type_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "toy"}))
    with pytest.raises(ValueError, match="model_type 'toy': not a policy vla_lab can load"):
        load_policy(tmp_path)
