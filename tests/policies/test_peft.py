import pytest
import torch
from peft import PeftModel

from tests.policies.conftest import INSTRUCTIONS, make_batch, model_cfg, norm_entry, peft_cfg, tiny_cfg
from vla_lab.policies.factory import load_policy, make_policy
from vla_lab.policies.lora import count_params, resolve_targets
from vla_lab.policies.openvla.modeling_openvla import OpenVLAPolicy


def lora_params(model):
    return {n: p for n, p in model.named_parameters() if "lora_" in n}


def train_steps(policy, batch, steps, lr=2e-3):
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss, _ = policy(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.timeout(60)
def test_official_lora_count_matches_peft_and_the_formula():
    with torch.device("meta"):
        policy = OpenVLAPolicy(model_cfg("openvla_7b"), processor=None, init_weights=False)
    linears = {
        n: m
        for n, m in policy.model.named_modules()
        if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head")
    }
    spec = peft_cfg("lora_openvla")
    expected = sum(spec.r * (m.in_features + m.out_features) for m in linears.values())
    with torch.device("meta"):
        policy.apply_peft(spec)
    trainable, total = policy.model.get_nb_trainable_parameters()
    assert trainable == expected
    assert count_params(policy.model) == (total, trainable)
    assert total == 7_541_237_184 + expected


@pytest.mark.timeout(60)
def test_light_recipe_adapts_only_llm_q_and_v():
    policy = make_policy(tiny_cfg(), peft_cfg("lora_light"), corpus=INSTRUCTIONS)
    names = {n.split(".lora_")[0] for n in lora_params(policy.model)}
    assert names and all(".language_model." in n and n.endswith(("q_proj", "v_proj")) for n in names)
    trainable = [n for n, p in policy.model.named_parameters() if p.requires_grad]
    assert all("lora_" in n for n in trainable)


def test_unknown_target_module_is_a_clear_error():
    with pytest.raises(ValueError, match=r"target module\(s\) \['qkv_proj'\].*available names: .*q_proj"):
        make_policy(tiny_cfg(), peft_cfg("lora_light", "peft.target_modules=[qkv_proj]"), corpus=INSTRUCTIONS)


def test_unknown_submodel_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown sub-model\(s\) \['expert'\].*choose from"):
        make_policy(tiny_cfg(), peft_cfg("lora_light", "peft.adapt=[expert]"), corpus=INSTRUCTIONS)


def test_resolve_targets_excludes_the_output_head():
    policy = make_policy(tiny_cfg(), corpus=INSTRUCTIONS)
    names = resolve_targets(policy.model, ["language_model"], ["all-linear"])
    assert names and not any(n.endswith("lm_head") for n in names)


@pytest.mark.timeout(120)
def test_lora_trains_adapters_only_and_base_stays_fixed():
    policy = make_policy(tiny_cfg(), peft_cfg("lora_openvla"), corpus=INSTRUCTIONS)
    base = {n: p.detach().clone() for n, p in policy.model.named_parameters() if not p.requires_grad}
    losses = train_steps(policy, make_batch(2, size=112), 8)
    assert losses[-1] < losses[0]
    for n, p in policy.model.named_parameters():
        if n in base:
            assert torch.equal(p, base[n]), n


@pytest.mark.timeout(180)
@pytest.mark.parametrize("preset", ["qlora_nf4", "qlora_int8"])
def test_qlora_gradients_survive_a_no_grad_pass(preset):
    import bitsandbytes as bnb

    torch.manual_seed(0)
    policy = make_policy(
        tiny_cfg(), peft_cfg(preset, "peft.gradient_checkpointing=false"), corpus=INSTRUCTIONS
    )
    kind = bnb.nn.Linear4bit if preset == "qlora_nf4" else bnb.nn.Linear8bitLt
    quantized = [m for m in policy.model.modules() if isinstance(m, kind)]
    assert len(quantized) >= 2 * 7  # q,k,v,o,gate,up,down in both layers
    batch = make_batch(2, size=112)
    policy.eval()
    with torch.no_grad():
        policy.predict_action_chunk(batch)
        policy(batch)
    policy.train()
    loss, _ = policy(batch)
    loss.backward()
    # lora_B of every layer needs gradients flowing back through all the quantized layers above it.
    grads = [p.grad for n, p in policy.model.named_parameters() if "lora_B" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    losses = train_steps(policy, batch, 6)
    assert losses[-1] < losses[0]


@pytest.mark.timeout(180)
def test_adapter_save_load_and_merge_match(tmp_path):
    torch.manual_seed(0)
    policy = make_policy(
        tiny_cfg(), peft_cfg("lora_openvla"), corpus=INSTRUCTIONS, norm_stats={"demo": norm_entry()}
    )
    batch = make_batch(2, size=112, seed=7)
    train_steps(policy, batch, 4)
    # Non-trivial adapters: lora_B starts at zero and must have moved.
    assert any(p.abs().sum() > 0 for n, p in lora_params(policy.model).items() if "lora_B" in n)
    policy.eval()
    adapted = policy.predict_action_chunk(batch)
    policy.save_pretrained(tmp_path / "adapter")
    files = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert {
        "adapter_model.safetensors",
        "adapter_config.json",
        "config.json",
        "processor_config.json",
    } <= files
    assert "model.safetensors" not in files

    loaded = load_policy(tmp_path / "adapter").eval()
    assert isinstance(loaded.model, PeftModel)
    assert torch.equal(loaded.predict_action_chunk(batch), adapted)

    # Merged: compare continuous features (patches → LLM hidden) and the decoded actions.
    patches_a, prompts = policy._encode_observation(batch)
    loaded.merge_adapters()
    assert not isinstance(loaded.model, PeftModel)
    patches_m, _ = loaded._encode_observation(batch)
    torch.testing.assert_close(patches_m, patches_a, atol=1e-4, rtol=1e-4)
    assert torch.equal(loaded.predict_action_chunk(batch), adapted)
    loaded.save_pretrained(tmp_path / "merged")
    merged = load_policy(tmp_path / "merged").eval()
    assert torch.equal(merged.predict_action_chunk(batch), adapted)


@pytest.mark.timeout(180)
def test_adapter_on_a_different_base_is_rejected(tmp_path):
    torch.manual_seed(0)
    base = make_policy(tiny_cfg(), corpus=INSTRUCTIONS)
    base.save_pretrained(tmp_path / "base")
    adapted = load_policy(tmp_path / "base").apply_peft(peft_cfg("lora_light"))
    adapted.save_pretrained(tmp_path / "adapter")
    torch.manual_seed(1)
    make_policy(tiny_cfg(), corpus=INSTRUCTIONS).save_pretrained(tmp_path / "base")  # base replaced
    with pytest.raises(ValueError, match="different base model"):
        load_policy(tmp_path / "adapter")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("quantization", ["int8", "nf4"])
def test_loading_for_inference_with_quantized_llm(tmp_path, quantization):
    import bitsandbytes as bnb

    torch.manual_seed(0)
    policy = make_policy(
        tiny_cfg("model.action_head=l1_chunk", "model.chunk_size=2"), corpus=INSTRUCTIONS
    ).eval()
    batch = make_batch(2, chunk=2, size=112, seed=10)
    full = policy.predict_action_chunk(batch)
    policy.save_pretrained(tmp_path / "ckpt")
    quantized = load_policy(tmp_path / "ckpt", quantization=quantization).eval()
    kind = bnb.nn.Linear4bit if quantization == "nf4" else bnb.nn.Linear8bitLt
    layers = [n for n, m in quantized.model.named_modules() if isinstance(m, kind)]
    assert layers and all(n.startswith("language_model.") for n in layers)
    out = quantized.predict_action_chunk(batch)
    assert out.shape == full.shape and torch.isfinite(out).all()
    # Continuous head: quantization perturbs, it does not scramble.
    assert (out - full).abs().mean() < (0.05 if quantization == "int8" else 0.25)
