"""Parity with upstream OpenVLA (openvla/openvla, ``prismatic/extern/hf/``).

``data/openvla_parity.safetensors`` was produced once by running upstream's own HF modeling code,
offline in a separate virtualenv with its pins (transformers 4.40.1, timm 0.9.10, tokenizers 0.19.1,
torch 2.14.1), on ``OpenVLAConfig(vision_backbone_id="dinosiglip-vit-so-224px",
llm_backbone_id="llama2-7b-pure", ...)`` with the real DINOv2-L/SigLIP-So400M backbones and a tiny
Llama (hidden 64, 2 layers, 4 heads, MLP 128, vocab 32064). Every weight was set by
``_parity.value_for(key, shape)``, the image is ``_parity.image()`` normalized per backbone,
and the prompt is the Llama-2 tokenization of "pick up the red block" in OpenVLA's template. Saved:
strided samples of the patch features, projector output and logits, the logits of the 256 action
tokens at the last prompt position, the 7 greedy action ids with ``generate`` (and their scores),
and ``predict_action``'s un-normalized actions. Only those small tensors are in the repository.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from tests.policies import _parity as R
from tests.policies.conftest import INSTRUCTIONS
from vla_lab.policies.checkpoint import save_state_dict
from vla_lab.policies.factory import load_policy
from vla_lab.policies.openvla.configuration_openvla import LlamaSpec, OpenVLAConfig
from vla_lab.policies.openvla.modeling_openvla import OpenVLAPolicy
from vla_lab.policies.openvla.processor_openvla import OpenVLAProcessor
from vla_lab.policies.openvla.sequence_openvla import assemble
from vla_lab.policies.text_tokenizer import train_bpe_tokenizer

REF = Path(__file__).parent / "data" / "openvla_parity.safetensors"
PROMPT = [
    1,
    512,
    29901,
    1724,
    3158,
    881,
    278,
    19964,
    2125,
    304,
    5839,
    701,
    278,
    2654,
    2908,
    29973,
    13,
    3744,
    29901,
]
NORM = {
    "parity": {
        "action": {
            "q01": [-0.5, -0.4, -0.3, -0.2, -0.1, -0.05, 0.0],
            "q99": [0.5, 0.6, 0.7, 0.2, 0.3, 0.15, 1.0],
            "mask": [True] * 6 + [False],
        }
    }
}


def load_ref():
    with safe_open(str(REF), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118


@pytest.fixture(scope="module")
def policy():
    text = LlamaSpec(
        vocab_size=32064,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
    )
    config = OpenVLAConfig(text=text)
    tokenizer = train_bpe_tokenizer(INSTRUCTIONS, n_text=512, n_action=256)
    processor = OpenVLAProcessor.from_config(config, tokenizer, NORM)
    policy = OpenVLAPolicy(config, processor, init_weights=False).eval()
    R.fill_(policy.model)
    return policy


def check_against_reference(policy):
    ref, meta = load_ref()
    with torch.no_grad():
        pixel_values = policy.processor.pixel_values(R.image())
        patches = policy.model.vision_backbone(pixel_values)
        torch.testing.assert_close(patches[0, ::17, ::29], ref["patches_sample"], atol=2e-4, rtol=1e-4)
        torch.testing.assert_close(patches.mean(dim=(0, 1)), ref["patches_mean"], atol=2e-5, rtol=1e-4)
        projected = policy.model.projector(patches)
        torch.testing.assert_close(projected[0, ::17, ::3], ref["projector_sample"], atol=2e-4, rtol=1e-4)

        prompt = [[*PROMPT, 29871]]
        seq = assemble(policy.model, projected, prompt, None)
        assert seq.embeds.shape[1] == int(meta["logits_len"])
        hidden = policy._hidden(seq).last_hidden_state
        logits = policy.model.language_model.lm_head(hidden)
        torch.testing.assert_close(logits[0, ::7, ::101], ref["logits_sample"], atol=2e-4, rtol=1e-4)
        torch.testing.assert_close(
            logits[0, -1, 31744:32000], ref["logits_last_actions"], atol=2e-4, rtol=1e-4
        )

        ids = policy.generate_action_ids(projected, prompt)
    assert ids[0].tolist() == ref["generated_ids"].tolist()
    actions = policy.processor.unnormalize(policy.action_tokenizer.decode(ids[0]), "parity")
    torch.testing.assert_close(actions.double(), ref["actions"], atol=1e-6, rtol=0)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_matches_upstream_reference(policy):
    _, meta = load_ref()
    shapes = {k: list(v.shape) for k, v in policy.model.state_dict().items()}
    assert shapes == json.loads(meta["key_shapes"])
    check_against_reference(policy)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_loads_a_checkpoint_in_the_official_layout(tmp_path):
    """config.json as upstream's config class writes it, sharded safetensors named like upstream's
    state dict, no vla_lab fields: loading must reproduce the reference."""
    _, meta = load_ref()
    ckpt = tmp_path / "openvla-parity"
    ckpt.mkdir()
    shutil.copy(REF.parent / "openvla_parity_config.json", ckpt / "config.json")
    state = {k: R.value_for(k, tuple(s)) for k, s in json.loads(meta["key_shapes"]).items()}
    save_state_dict(state, ckpt, max_shard_bytes=2**30)
    del state
    assert (ckpt / "model.safetensors.index.json").exists()
    train_bpe_tokenizer(INSTRUCTIONS, n_text=512, n_action=256).save_pretrained(str(ckpt))
    policy = load_policy(ckpt).eval()
    assert policy.config.vocab_size == 32000 and policy.config.text.rms_norm_eps == 1e-6
    check_against_reference(policy)
    with pytest.raises(KeyError, match=r"available: \['parity'\]"):
        policy.processor.unnormalize(torch.zeros(7), "bridge_orig")
