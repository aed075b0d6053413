"""Parity with lerobot's SmolVLA (lerobot 0.6.1, ``policies/smolvla/``).

``data/smolvla_parity.safetensors`` was produced once by lerobot 0.6.1's own ``SmolVLAPolicy``, run
offline on CPU in a separate virtualenv (Python 3.11, torch 2.14.1, transformers 5.23.0; lerobot
installed with ``--no-deps``, its few Python-3.12-only syntax lines rewritten, and its post-denoise
cache trim rewritten for this transformers' cache API), built from a local directory holding a tiny
``SmolVLMConfig`` (the dimensions of ``conf/model/smolvla_tiny.yaml``) and a ``SmolVLMProcessor``,
with ``load_vlm_weights=False``, ``num_vlm_layers=4``, ``chunk_size=10``. Every weight was set by
``_parity.value_for("model." + key, shape)``. With the stored inputs (image, padded state and
actions, language ids and mask, noise and flow times) it saved the per-element training losses of
``VLAFlowMatching.forward`` and the chunk ``sample_actions`` integrates from the stored noise. The
same run wrote ``smolvla_parity_lerobot_config.json`` (lerobot's ``save_pretrained``) and
``smolvla_parity_vlm_config.json`` (the tiny VLM's config), used to rebuild a lerobot-layout
checkpoint directory here.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tests.policies import _parity as R
from tests.policies.conftest import INSTRUCTIONS, model_cfg
from vla_lab.policies.factory import load_policy, make_policy
from vla_lab.policies.text_tokenizer import train_bpe_tokenizer

REF = Path(__file__).parent / "data" / "smolvla_parity.safetensors"


@pytest.fixture(scope="module")
def setup():
    with safe_open(str(REF), "pt") as f:
        ref, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118
    policy = make_policy(model_cfg("smolvla_tiny"), corpus=INSTRUCTIONS).eval()
    with torch.no_grad():
        for k, t in policy.model.state_dict().items():
            t.copy_(R.value_for("model." + k, tuple(t.shape)))
    return policy, ref, meta


def test_names_and_shapes_match_lerobot(setup):
    policy, _, meta = setup
    ours = {"model." + k: list(v.shape) for k, v in policy.model.state_dict().items()}
    assert ours == json.loads(meta["key_shapes"])


@pytest.mark.timeout(120)
def test_training_loss_and_sampled_chunk_match_lerobot(setup):
    policy, ref, _ = setup
    images = [ref["image"] * 2 - 1]
    lang, mask = ref["lang"], ref["lang_mask"].bool()
    with torch.no_grad():
        losses = policy.model.velocity_loss(
            images, lang, mask, ref["state"], ref["actions"], ref["noise"], ref["time"]
        )
        sampled = policy.model.sample_actions(images, lang, mask, ref["state"], ref["noise"])
    torch.testing.assert_close(losses, ref["losses"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sampled, ref["sampled"], atol=1e-5, rtol=1e-5)


@pytest.mark.timeout(120)
def test_loads_a_checkpoint_in_lerobot_layout(setup, tmp_path):
    """lerobot's own config.json (VLM dims read from ``vlm_model_name``'s config.json), weights under
    ``model.*`` as lerobot saves them, the tokenizer given separately: same outputs."""
    _, ref, meta = setup
    data = REF.parent
    vlm = tmp_path / "vlm"
    vlm.mkdir()
    shutil.copy(data / "smolvla_parity_vlm_config.json", vlm / "config.json")
    ckpt = tmp_path / "lerobot_ckpt"
    ckpt.mkdir()
    cfg = json.loads((data / "smolvla_parity_lerobot_config.json").read_text())
    cfg["vlm_model_name"] = str(vlm)
    (ckpt / "config.json").write_text(json.dumps(cfg))
    state = {k: R.value_for(k, tuple(s)) for k, s in json.loads(meta["key_shapes"]).items()}
    save_file(state, str(ckpt / "model.safetensors"))
    tok = tmp_path / "tokenizer"
    train_bpe_tokenizer(INSTRUCTIONS, n_text=512, n_action=0).save_pretrained(str(tok))
    policy = load_policy(ckpt, tokenizer=str(tok)).eval()
    assert policy.config.num_vlm_layers == 4 and policy.config.text.hidden_size == 64
    assert policy.config.cameras == ["agentview"] and policy.config.action_dim == 7
    images = [ref["image"] * 2 - 1]
    with torch.no_grad():
        sampled = policy.model.sample_actions(
            images, ref["lang"], ref["lang_mask"].bool(), ref["state"], ref["noise"]
        )
    torch.testing.assert_close(sampled, ref["sampled"], atol=1e-5, rtol=1e-5)
    # The processor's own image path (resize-with-pad is a no-op at 64 px, then [-1, 1]) agrees too.
    obs = {
        "observation.images.agentview": ref["image"],
        "observation.state": ref["state"][:, :8],
        "task": ["a", "b"],
    }
    torch.testing.assert_close(policy.processor.images(obs)[0], images[0])
