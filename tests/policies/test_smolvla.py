import pytest
import torch

from tests.policies.conftest import INSTRUCTIONS, make_batch, model_cfg, norm_entry, peft_cfg
from vla_lab.policies.factory import load_policy, make_policy
from vla_lab.policies.lora import count_params
from vla_lab.policies.smolvla.modeling_smolvla import SmolVLAFlowMatching, SmolVLAPolicy, block_mask

CHUNK = 10


def smol_batch(batch_size=2, seed=0, size=96):
    return make_batch(batch_size, chunk=CHUNK, size=size, seed=seed, state_dim=8)


def fixed_noise_time(batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = batch["action"].shape[0]
    return torch.randn(b, CHUNK, 32, generator=g), torch.rand(b, generator=g) * 0.9 + 0.05


@pytest.mark.timeout(60)
def test_official_config_builds_on_meta_with_official_counts():
    with torch.device("meta"):
        policy = SmolVLAPolicy(model_cfg("smolvla_base"), processor=None)
    policy.apply_default_freezing()
    total, trainable = count_params(policy.model)
    assert total == 450_046_176
    # Expert + state/action/time projections; the VLM is frozen by default.
    assert trainable == 99_880_992
    keys = policy.model.state_dict()
    vlm = "vlm_with_expert.vlm.model.text_model.layers"
    assert f"{vlm}.15.mlp.down_proj.weight" in keys and f"{vlm}.16.mlp.down_proj.weight" not in keys
    expert = "vlm_with_expert.lm_expert.layers"
    assert tuple(keys[f"{expert}.0.self_attn.k_proj.weight"].shape) == (320, 720)  # self-attention layer
    assert tuple(keys[f"{expert}.1.self_attn.k_proj.weight"].shape) == (320, 320)  # cross: maps VLM kv width
    assert tuple(keys[f"{expert}.0.mlp.gate_proj.weight"].shape) == (2048, 720)
    assert not any("lm_expert.embed_tokens" in k for k in keys)
    assert tuple(keys["state_proj.weight"].shape) == (960, 32)
    assert tuple(keys["action_time_mlp_in.weight"].shape) == (720, 1440)


def test_block_mask_prefix_bidirectional_state_and_actions_causal():
    pad = torch.tensor([[True, True, False, True, True, True]])
    ar = torch.tensor([[0, 0, 0, 1, 1, 1]], dtype=torch.bool)
    m = block_mask(pad, ar)[0]
    assert m[0, 1] and m[1, 0]  # prefix sees itself both ways
    assert not m[0, 2] and not m[2, 2]  # padding is invisible
    assert not m[1, 3] and m[3, 1]  # prefix cannot see the state; the state sees the prefix
    assert m[5, 4] and not m[4, 5]  # actions are causal


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return make_policy(model_cfg("smolvla_tiny"), corpus=INSTRUCTIONS, norm_stats={"demo": norm_entry()})


def test_cached_denoising_velocity_equals_the_training_forward(tiny):
    tiny.eval()
    batch = smol_batch(2, seed=1)
    noise, t = fixed_noise_time(batch)
    images, tokens, masks, state = tiny._inputs(batch)
    m: SmolVLAFlowMatching = tiny.model
    with torch.no_grad():
        # Training path: one pass over prefix + suffix. Its loss target is noise - actions, so with
        # actions = 0 and x_t = t·noise the squared error reveals v_t = noise ± sqrt(loss).
        x_t = t[:, None, None] * noise
        prefix, p_pad, p_ar = m.embed_prefix(images, tokens, masks, state)
        suffix, s_pad, s_ar = m.embed_suffix(x_t, t)
        pad, ar = torch.cat([p_pad, s_pad], 1), torch.cat([p_ar, s_ar], 1)
        _, out = m.vlm_with_expert([prefix, suffix], block_mask(pad, ar), torch.cumsum(pad.long(), 1) - 1)
        v_full = m.action_out_proj(out[:, -CHUNK:])
        # Inference path: prefix K/V cached once, suffix alone.
        cache = []
        pos = torch.cumsum(p_pad.long(), 1) - 1
        m.vlm_with_expert([prefix, None], block_mask(p_pad, p_ar), pos, cache=cache, fill_cache=True)
        v_cached = m._velocity(x_t, t, p_pad, cache)
    torch.testing.assert_close(v_cached, v_full, atol=1e-5, rtol=1e-4)


def test_language_padding_does_not_change_a_sample(tiny):
    tiny.eval()
    batch = smol_batch(3, seed=2)  # three instructions of different lengths
    noise = torch.randn(3, CHUNK, 32, generator=torch.Generator().manual_seed(3))
    together = tiny.predict_action_chunk(batch, noise=noise)
    one = {k: v[1:2] for k, v in batch.items()}
    torch.testing.assert_close(
        tiny.predict_action_chunk(one, noise=noise[1:2]), together[1:2], atol=1e-4, rtol=1e-4
    )


@pytest.mark.timeout(120)
def test_tiny_trains_with_the_vlm_frozen():
    torch.manual_seed(0)
    policy = make_policy(model_cfg("smolvla_tiny"), corpus=INSTRUCTIONS)
    vlm = policy.model.vlm_with_expert.vlm
    assert not any(p.requires_grad for p in vlm.parameters())
    assert all(p.requires_grad for p in policy.model.vlm_with_expert.lm_expert.parameters())
    batch = smol_batch(2, seed=4, size=64)
    noise, t = fixed_noise_time(batch)
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(20):
        loss, _ = policy(batch, noise=noise, time=t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    policy.eval()
    assert policy.predict_action_chunk(batch).shape == (2, CHUNK, 7)


def test_flow_time_is_beta_distributed(tiny):
    t = tiny.sample_time(20000, "cpu")
    assert t.min() >= 0.001 and t.max() <= 1.0
    # Beta(1.5, 1) has mean 0.6, scaled by 0.999 and shifted by 0.001.
    assert t.mean().item() == pytest.approx(0.6 * 0.999 + 0.001, abs=0.01)


def test_missing_state_and_bad_image_are_clear_errors(tiny):
    batch = smol_batch(1)
    with pytest.raises(KeyError, match="observation.state"):
        tiny.predict_action_chunk({k: v for k, v in batch.items() if k != "observation.state"})
    bad = dict(batch, **{"observation.images.agentview": torch.rand(1, 1, 96, 96)})
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        tiny.predict_action_chunk(bad)


@pytest.mark.timeout(120)
def test_save_load_round_trip_keeps_lerobot_key_layout(tiny, tmp_path):
    from safetensors import safe_open

    tiny.eval()
    batch = smol_batch(2, seed=5)
    noise = torch.randn(2, CHUNK, 32, generator=torch.Generator().manual_seed(6))
    before = tiny.predict_action_chunk(batch, noise=noise)
    tiny.save_pretrained(tmp_path / "ckpt")
    with safe_open(str(tmp_path / "ckpt" / "model.safetensors"), "pt") as f:
        names = list(f.keys())
    assert all(k.startswith("model.") for k in names)
    assert "model.vlm_with_expert.vlm.model.connector.modality_projection.proj.weight" in names
    loaded = load_policy(tmp_path / "ckpt").eval()
    assert torch.equal(loaded.predict_action_chunk(batch, noise=noise), before)
    torch.testing.assert_close(
        loaded.processor.unnormalize(before, "demo"), tiny.processor.unnormalize(before, "demo")
    )


@pytest.mark.timeout(180)
@pytest.mark.parametrize("preset", ["lora_light", "qlora_nf4"])
def test_lora_and_qlora_with_full_expert_round_trip(preset, tmp_path):
    torch.manual_seed(0)
    policy = make_policy(
        model_cfg("smolvla_tiny"), peft_cfg(preset, "peft.gradient_checkpointing=false"), corpus=INSTRUCTIONS
    )
    batch = smol_batch(2, seed=7)
    noise, t = fixed_noise_time(batch)
    policy.eval()
    with torch.no_grad():
        policy.predict_action_chunk(batch, noise=noise)
    policy.train()
    loss, _ = policy(batch, noise=noise, time=t)
    loss.backward()
    # The last VLM layer's own outputs never reach the expert (only its K/V do), so its query
    # adapter has no gradient by construction; every other adapter must have one.
    last = f"text_model.layers.{policy.config.num_vlm_layers - 1}."
    lora_b = [p.grad for n, p in policy.model.named_parameters() if "lora_B" in n and last not in n]
    assert lora_b and all(g is not None and g.abs().sum() > 0 for g in lora_b)
    expert = [p for n, p in policy.model.named_parameters() if "lm_expert" in n and "lora_" not in n]
    assert expert and all(p.requires_grad and p.grad is not None for p in expert)
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=3e-3)
    losses = [loss.item()]
    for _ in range(8):
        opt.step()
        opt.zero_grad()
        loss, _ = policy(batch, noise=noise, time=t)
        loss.backward()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    policy.eval()
    after = policy.predict_action_chunk(batch, noise=noise)
    policy.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "trained_modules.safetensors").exists()
    loaded = load_policy(tmp_path / "adapter").eval()
    torch.testing.assert_close(loaded.predict_action_chunk(batch, noise=noise), after, atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    torch.manual_seed(0)
    policy = make_policy(model_cfg("smolvla_tiny"), corpus=INSTRUCTIONS)
    batch = smol_batch(2, seed=8, size=64)
    noise, t = fixed_noise_time(batch)
    results = []
    for enabled in (False, True):
        policy.set_gradient_checkpointing(enabled)
        policy.zero_grad()
        loss, _ = policy(batch, noise=noise, time=t)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads))
    torch.testing.assert_close(results[0][0], results[1][0])
    assert results[0][1].keys() == results[1][1].keys() and results[0][1]
    for n, g in results[0][1].items():
        torch.testing.assert_close(results[1][1][n], g, atol=1e-6, rtol=1e-5, msg=n)


def test_long_instruction_is_truncated_with_a_warning(tiny):
    batch = smol_batch(1)
    batch["task"] = [" ".join(["carefully"] * 80)]
    with pytest.warns(UserWarning, match="truncated"):
        tokens, mask = tiny.processor.language(batch["task"], "cpu")
    assert tokens.shape[1] == tiny.config.tokenizer_max_length == mask.shape[1]
