import json
import warnings

import pytest
import torch

from tests.policies.conftest import INSTRUCTIONS, make_batch, model_cfg, norm_entry, peft_cfg, tiny_cfg
from vla_lab.policies.factory import load_policy, make_policy
from vla_lab.policies.openvla.configuration_openvla import OpenVLAConfig
from vla_lab.policies.openvla.modeling_openvla import OpenVLAForActionPrediction
from vla_lab.policies.openvla.sequence_openvla import block_bidirectional_mask

# Component sizes of openvla/openvla-7b (DINOv2 ViT-L/14-reg4, SigLIP So400M/14, projector, Llama-2 + 64 rows).
OFFICIAL = {
    "vision": 730_911_680,
    "dinov2": 303_230_976,
    "siglip": 427_680_704,
    "projector": 71_385_600,
    "llm": 6_738_939_904,
}


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.timeout(60)
def test_official_config_builds_on_meta_with_official_counts():
    with torch.device("meta"):
        model = OpenVLAForActionPrediction(model_cfg("openvla_7b"), init_weights=False)
    assert n_params(model.vision_backbone.featurizer) == OFFICIAL["dinov2"]
    assert n_params(model.vision_backbone.fused_featurizer) == OFFICIAL["siglip"]
    assert n_params(model.projector) == OFFICIAL["projector"]
    assert n_params(model.language_model) == OFFICIAL["llm"]
    assert n_params(model) == 7_541_237_184
    keys = model.state_dict()
    assert len(keys) == 982
    # Names as in the released checkpoint (LayerScale renamed, projector fc1..fc3, HF Llama).
    for name, shape in {
        "vision_backbone.featurizer.blocks.0.ls1.scale_factor": (1024,),
        "vision_backbone.featurizer.reg_token": (1, 4, 1024),
        "vision_backbone.fused_featurizer.attn_pool.latent": (1, 1, 1152),
        "projector.fc1.weight": (8704, 2176),
        "projector.fc3.weight": (4096, 4096),
        "language_model.model.embed_tokens.weight": (32064, 4096),
        "language_model.lm_head.weight": (32064, 4096),
    }.items():
        assert tuple(keys[name].shape) == shape, name
    assert not any("gamma" in k for k in keys)
    assert model.language_model.config.rms_norm_eps == 1e-6


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return make_policy(tiny_cfg(), corpus=INSTRUCTIONS, norm_stats={"demo": norm_entry()})


def test_prompt_format_bos_template_and_space_token(tiny):
    proc = tiny.processor
    ids = proc.prompt_ids(["Pick Up The Red Block"])[0]
    assert ids[0] == tiny.config.text.bos_token_id
    assert ids[-1] == tiny.config.space_token_id
    text = proc.tokenizer.decode(ids[1:-1])
    assert text == "In: What action should the robot take to pick up the red block?\nOut:"
    # Action ids never collide with text ids.
    assert max(max(proc.prompt_ids(INSTRUCTIONS), key=max)) < tiny.action_tokenizer.first_action_id


def test_long_instruction_is_truncated_with_a_warning(tiny):
    long = " ".join(["carefully"] * 200)
    with pytest.warns(UserWarning, match="truncated"):
        ids = tiny.processor.prompt_ids([long])[0]
    assert len(ids) <= tiny.config.max_prompt_tokens
    assert ids[0] == tiny.config.text.bos_token_id and ids[-1] == tiny.config.space_token_id


def test_loss_only_on_action_tokens_and_stop_token(tiny):
    from vla_lab.policies.openvla.sequence_openvla import assemble

    batch = make_batch(2, size=112)
    with torch.no_grad():
        loss, logs = tiny(batch)
        # Reference: HF's own shifted causal-LM loss over the full sequence, with labels that are
        # -100 everywhere except the 7 action tokens and </s> at the end.
        patches, prompts = tiny._encode_observation(batch)
        targets = tiny.action_tokenizer.encode(batch["action"]).reshape(2, -1)
        suffix = torch.cat([targets, torch.full((2, 1), tiny.config.text.eos_token_id)], dim=1)
        seq = assemble(tiny.model, patches, prompts, tiny.model.embed_tokens(suffix))
        labels = torch.full(seq.mask.shape, -100)
        labels[:, -8:] = suffix
        ref = tiny.model.language_model(
            inputs_embeds=seq.embeds,
            attention_mask=seq.mask.long(),
            position_ids=seq.position_ids,
            labels=labels,
        ).loss
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=1e-5)
    assert 0 <= float(logs["token_accuracy"]) <= 1


@pytest.mark.timeout(120)
def test_tiny_tokens_head_trains_and_predicts():
    torch.manual_seed(0)
    policy = make_policy(tiny_cfg(img=56), corpus=INSTRUCTIONS)
    batch = make_batch(2, seed=1, size=56)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    losses = []
    for _ in range(20):
        loss, _ = policy(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    policy.eval()
    pred = policy.predict_action_chunk(batch)
    assert pred.shape == (2, 1, 7)
    # Memorised: decoded actions sit within two bins of the targets.
    assert (pred - batch["action"]).abs().mean() < 0.1


@pytest.mark.timeout(120)
@pytest.mark.parametrize("read_prompt_end", [False, True])
def test_l1_chunk_head_trains_in_one_pass(read_prompt_end):
    torch.manual_seed(0)
    policy = make_policy(
        tiny_cfg(
            "model.action_head=l1_chunk",
            "model.chunk_size=4",
            f"model.l1_head.read_prompt_end={read_prompt_end}",
            img=56,
        ),
        corpus=INSTRUCTIONS,
    )
    # the head reads each step's 7 placeholders, and the prompt's last state when asked to
    assert policy.model.action_head.fc_in.in_features == 128 * (7 + read_prompt_end)
    batch = make_batch(2, chunk=4, seed=2, size=56)
    # One shared target chunk: fitting it needs the head, the LLM and the placeholders to learn.
    batch["action"][1] = batch["action"][0]
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    first = None
    for _ in range(25):
        loss, logs = policy(batch)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    assert {"l1_error", "direction_accuracy", "gripper_accuracy", "position_l1", "rotation_l1"} <= set(logs)
    assert policy.predict_action_chunk(batch).shape == (2, 4, 7)


def test_block_mask_is_causal_before_the_block_and_bidirectional_inside():
    mask = torch.tensor([[False, True, True, True, True, True]])
    m = block_bidirectional_mask(mask, 2)[0, 0]
    assert not m[1, 0]  # padding key is never attended
    assert m[2, 1] and not m[1, 2]  # causal prefix
    assert m[4, 5] and m[5, 4]  # the action block sees itself both ways
    assert not m[3, 4]  # prefix does not see the block


@pytest.mark.parametrize("head", ["tokens", "l1_chunk"])
def test_batched_prediction_equals_one_by_one(head):
    torch.manual_seed(0)
    policy = make_policy(
        tiny_cfg(f"model.action_head={head}", "model.chunk_size=2"), corpus=INSTRUCTIONS
    ).eval()
    # Instructions of different lengths exercise the left padding.
    batch = make_batch(3, chunk=2, seed=3, size=112)
    together = policy.predict_action_chunk(batch)
    for i in range(3):
        one = {k: (v[i : i + 1] if torch.is_tensor(v) else v[i : i + 1]) for k, v in batch.items()}
        torch.testing.assert_close(policy.predict_action_chunk(one), together[i : i + 1], atol=1e-4, rtol=0)


def test_kv_cache_decoding_equals_full_recompute(tiny):
    tiny.eval()
    batch = make_batch(2, seed=4, size=112)
    patches, prompts = tiny._encode_observation(batch)
    cached = tiny.generate_action_ids(patches, prompts)
    # Reference: re-run the whole sequence for every new token (no cache).
    from vla_lab.policies.openvla.sequence_openvla import assemble

    ids = torch.empty(2, 0, dtype=torch.long)
    with torch.no_grad():
        for _ in range(7):
            suffix = tiny.model.embed_tokens(ids) if ids.shape[1] else None
            seq = assemble(tiny.model, patches, prompts, suffix)
            h = tiny._hidden(seq).last_hidden_state[:, -1:]
            ids = torch.cat([ids, tiny.model.language_model.lm_head(h).argmax(-1)], dim=1)
    assert torch.equal(cached, ids)


def test_unnormalize_by_key_and_errors_list_available_keys(tiny):
    x = torch.zeros(1, 1, 7)
    out = tiny.processor.unnormalize(x, "demo")
    entry = norm_entry()
    lo, hi = torch.tensor(entry["action"]["q01"]), torch.tensor(entry["action"]["q99"])
    torch.testing.assert_close(out[0, 0, :6], ((lo + hi) / 2)[:6], atol=1e-5, rtol=0)
    assert out[0, 0, 6] == 0  # gripper passes through
    with pytest.raises(KeyError, match=r"available: \['demo'\]"):
        tiny.processor.unnormalize(x, "libero")
    tiny.processor.norm_stats["other"] = norm_entry(seed=1)
    try:
        with pytest.raises(ValueError, match=r"ambiguous.*\['demo', 'other'\]"):
            tiny.processor.unnormalize(x)
    finally:
        del tiny.processor.norm_stats["other"]


def test_official_norm_stats_layout_is_understood(tiny):
    official = {
        "action": {
            "q01": [-1.0] * 7,
            "q99": [1.0, 2, 3, 4, 5, 6, 7],
            "mask": [True] * 6 + [False],
            "mean": [0.0] * 7,
            "std": [1.0] * 7,
            "min": [-1.0] * 7,
            "max": [1.0] * 7,
        }
    }
    tiny.processor.norm_stats["bridge_orig"] = official
    try:
        out = tiny.processor.unnormalize(torch.ones(1, 1, 7), "bridge_orig")
    finally:
        del tiny.processor.norm_stats["bridge_orig"]
    torch.testing.assert_close(out[0, 0], torch.tensor([1.0, 2, 3, 4, 5, 6, 1.0]), atol=1e-5, rtol=0)


def test_wrong_image_size_is_rejected(tiny):
    batch = make_batch(1, size=224)
    with pytest.raises(ValueError, match="112x112"):
        tiny.predict_action_chunk(batch)


@pytest.mark.timeout(120)
def test_save_load_round_trip(tiny, tmp_path):
    tiny.eval()
    batch = make_batch(2, seed=5, size=112)
    before = tiny.predict_action_chunk(batch)
    tiny.save_pretrained(tmp_path / "ckpt")
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert cfg["model_type"] == "openvla" and "demo" in cfg["norm_stats"]
    assert cfg["timm_model_ids"][0].startswith("vit_large_patch14_reg4_dinov2")
    loaded = load_policy(tmp_path / "ckpt").eval()
    assert torch.equal(loaded.predict_action_chunk(batch), before)
    assert loaded.processor.steps == tiny.processor.steps
    for (k, a), (_, b) in zip(
        tiny.model.state_dict().items(), loaded.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), k


@pytest.mark.timeout(120)
def test_checkpoint_of_another_size_lists_mismatches(tiny, tmp_path):
    tiny.save_pretrained(tmp_path / "ckpt")
    cfg_path = tmp_path / "ckpt" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["text_config"]["num_hidden_layers"] = 3
    cfg["text_config"]["hidden_size"] = 256
    cfg_path.write_text(json.dumps(cfg))
    # a config edited by hand: the manifest refuses it; without one the weights are diffed
    with pytest.raises(ValueError, match=r"config.json: \d+ bytes, checkpoint_manifest.json says"):
        load_policy(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "checkpoint_manifest.json").unlink()
    with pytest.raises(ValueError, match=r"missing keys: .*layers\.2\..*\n.*shape mismatches"):
        load_policy(tmp_path / "ckpt")


def test_checkpoint_of_another_family_is_rejected(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="model_type 'llama'"):
        load_policy(tmp_path)


def test_config_round_trips_through_the_official_layout():
    cfg = model_cfg("openvla_tiny", "model.action_head=l1_chunk", "model.chunk_size=8")
    back = OpenVLAConfig.from_hf_dict(json.loads(json.dumps(cfg.to_hf_dict())))
    assert back == cfg


def test_unknown_action_head_is_rejected():
    with pytest.raises(ValueError, match="action_head"):
        model_cfg("openvla_tiny", "model.action_head=diffusion")


def test_no_warning_for_normal_instructions(tiny):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny.processor.prompt_ids(INSTRUCTIONS)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    torch.manual_seed(0)
    policy = make_policy(tiny_cfg(img=56), corpus=INSTRUCTIONS)
    batch = make_batch(2, size=56, seed=9)
    results = []
    for enabled in (False, True):
        policy.set_gradient_checkpointing(enabled)
        policy.zero_grad()
        loss, _ = policy(batch)
        loss.backward()
        # Unused by design (blocks after the second-to-last, SigLIP's pooling head): no gradient.
        results.append(
            (loss.detach(), {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None})
        )
    assert policy.model.language_model.is_activation_checkpointing
    torch.testing.assert_close(results[0][0], results[1][0])
    assert results[0][1].keys() == results[1][1].keys()
    for n, g in results[0][1].items():
        torch.testing.assert_close(results[1][1][n], g, atol=1e-6, rtol=1e-5, msg=n)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_small_config_trains_a_few_steps():
    torch.manual_seed(0)
    policy = make_policy(model_cfg("openvla_small"), corpus=INSTRUCTIONS)
    assert 10e6 < sum(p.numel() for p in policy.parameters()) < 30e6
    batch = make_batch(2, seed=11)
    opt = torch.optim.AdamW(policy.parameters(), lr=5e-4)
    losses = []
    for _ in range(6):
        loss, _ = policy(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.timeout(180)
def test_fine_tuning_a_saved_base_keeps_the_new_dataset_statistics(tiny, tmp_path):
    from vla_lab.policies.config import peft_spec_from

    tiny.save_pretrained(tmp_path / "base")
    cfg = tiny_cfg()
    cfg.pretrained = str(tmp_path / "base")
    tuned = make_policy(
        cfg,
        peft_spec_from({"method": "lora", "r": 4, "alpha": 8, "target_modules": ["q_proj"]}),
        norm_stats={"target": norm_entry(seed=1)},
    )
    assert sorted(tuned.processor.norm_stats) == ["demo", "target"]
    tuned.save_pretrained(tmp_path / "tuned")
    loaded = load_policy(tmp_path / "tuned")
    assert sorted(loaded.processor.norm_stats) == ["demo", "target"]
    assert loaded.processor.norm_stats["target"] == norm_entry(seed=1)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("injection", ["token", "queries"])
def test_proprio_is_read_and_survives_save_and_lora(tmp_path, injection):
    torch.manual_seed(0)
    cfg = tiny_cfg(
        "model.action_head=l1_chunk",
        "model.chunk_size=2",
        "model.proprio_dim=5",
        f"model.proprio_injection={injection}",
        img=56,
    )
    policy = make_policy(cfg, corpus=INSTRUCTIONS).eval()
    batch = make_batch(2, chunk=2, seed=6, size=56, state_dim=5)
    other = dict(batch, **{"observation.state": batch["observation.state"].flip(0)})
    # The state changes the prediction: it reaches the action block (as a token or in the queries).
    assert not torch.allclose(policy.predict_action_chunk(batch), policy.predict_action_chunk(other))
    policy.save_pretrained(tmp_path / "ckpt")
    loaded = load_policy(tmp_path / "ckpt").eval()
    assert loaded.config.proprio_dim == 5
    torch.testing.assert_close(loaded.predict_action_chunk(batch), policy.predict_action_chunk(batch))
    # Under LoRA the projector is new to any pretrained base, so it trains in full.
    adapted = make_policy(cfg, peft=peft_cfg("lora_light"), corpus=INSTRUCTIONS)
    trainable = {n for n, p in adapted.named_parameters() if p.requires_grad}
    assert any("proprio_projector.fc1" in n for n in trainable)


def test_proprio_shape_mismatch_names_both_settings():
    policy = make_policy(tiny_cfg("model.proprio_dim=3", img=56), corpus=INSTRUCTIONS)
    with pytest.raises(ValueError, match=r"proprio_dim=3.*\(2, 7\).*data.proprio_keys"):
        policy(make_batch(2, size=56, state_dim=7))
    with pytest.raises(KeyError, match="observation.state"):
        policy(make_batch(2, size=56))


def test_proprio_in_the_queries_needs_the_l1_head():
    with pytest.raises(ValueError, match="proprio_injection='queries' needs action_head='l1_chunk'"):
        tiny_cfg("model.proprio_dim=3", "model.proprio_injection=queries")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_l1_tail_evaluation_equals_the_full_llm_forward(kv_heads):
    """The l1 head reads only the placeholders' final states; evaluating the last layer there alone
    must give exactly what the full forward gives, with padding and grouped-query attention."""
    from vla_lab.policies.openvla.sequence_openvla import assemble, tail_hidden_states

    torch.manual_seed(0)
    policy = make_policy(
        tiny_cfg(
            "model.action_head=l1_chunk",
            "model.chunk_size=4",
            f"model.text.num_key_value_heads={kv_heads}",
            "model.text.num_hidden_layers=3",
            img=56,
        ),
        corpus=INSTRUCTIONS,
    ).eval()
    batch = make_batch(2, chunk=4, seed=3, size=56)
    batch["task"] = ["pick up the red block", "put the blue block in the white tray and then wait"]
    with torch.no_grad():
        patches, prompts = policy._encode_observation(batch)
    assert len(prompts[0]) != len(prompts[1])  # left padding is exercised
    n = 4 * 7
    seq = assemble(policy.model, patches, prompts, policy._placeholders(2, patches, None))
    mask = block_bidirectional_mask(seq.mask, n)
    full = policy._hidden(seq, attn=mask).last_hidden_state[:, -n:]
    tail = tail_hidden_states(policy.model.language_model.model, seq, mask, n)
    torch.testing.assert_close(tail, full, rtol=1e-5, atol=1e-5)
    # Gradients reach the same parameters with the same values.
    grads = []
    for out in (full, tail):
        policy.zero_grad()
        out.square().sum().backward(retain_graph=True)
        grads.append({k: p.grad.clone() for k, p in policy.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], rtol=1e-4, atol=1e-5, msg=k)


def _aux_cfg(*extra):
    return tiny_cfg(
        "model.action_head=l1_chunk", "model.chunk_size=2", "model.aux_target=object_pos", *extra, img=56
    )


@pytest.mark.timeout(120)
def test_aux_target_is_learnt_from_the_placeholders_and_needs_its_batch_key():
    torch.manual_seed(0)
    policy = make_policy(_aux_cfg(), corpus=INSTRUCTIONS)
    batch = make_batch(2, chunk=2, seed=7, size=56)
    with pytest.raises(KeyError, match="data.aux_keys"):
        policy(batch)
    batch["aux.object_pos"] = torch.tensor([[0.1, -0.2, 0.02], [-0.15, 0.25, 0.1]])
    plain = make_policy(
        tiny_cfg("model.action_head=l1_chunk", "model.chunk_size=2", img=56), corpus=INSTRUCTIONS
    )
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    first = None
    for _ in range(30):
        loss, logs = policy(batch)
        first = first if first is not None else logs["aux_l1"].item()
        opt.zero_grad()
        loss.backward()
        assert policy.model.aux_head.weight.grad.abs().sum() > 0
        opt.step()
    assert logs["aux_l1"].item() < 0.5 * first  # metres, read out of the action block
    # The readout is a training signal only: inference needs no aux key, and plain policies have none.
    assert policy.predict_action_chunk(make_batch(2, chunk=2, seed=8, size=56)).shape == (2, 2, 7)
    assert not hasattr(plain.model, "aux_head") and "aux_l1" not in plain(make_batch(2, chunk=2, size=56))[1]


@pytest.mark.timeout(120)
def test_aux_readout_survives_saving_and_is_dropped_by_a_fine_tune_without_it(tmp_path):
    torch.manual_seed(0)
    policy = make_policy(_aux_cfg("model.aux_action_target=object_offset"), corpus=INSTRUCTIONS).eval()
    policy.save_pretrained(tmp_path / "base")
    loaded = load_policy(tmp_path / "base").eval()
    for head in ("aux_head", "aux_action_head"):
        torch.testing.assert_close(getattr(loaded.model, head).weight, getattr(policy.model, head).weight)
    batch = make_batch(2, chunk=2, seed=9, size=56)
    # Fine-tuning on data without the privileged key: the base's readout is dropped, LoRA applies.
    tune_cfg = tiny_cfg("model.action_head=l1_chunk", "model.chunk_size=2", img=56)
    tune_cfg.pretrained = str(tmp_path / "base")
    tuned = make_policy(tune_cfg, peft=peft_cfg("lora_light"), corpus=INSTRUCTIONS)
    assert tuned.config.aux_target is None and not hasattr(tuned.model, "aux_head")
    assert tuned.config.aux_action_target is None and not hasattr(tuned.model, "aux_action_head")
    loss, _ = tuned(batch)
    loss.backward()
    tuned.save_pretrained(tmp_path / "tuned")
    again = load_policy(tmp_path / "tuned").eval()
    assert not hasattr(again.model, "aux_head")
    torch.testing.assert_close(again.predict_action_chunk(batch), tuned.eval().predict_action_chunk(batch))


@pytest.mark.timeout(120)
def test_aux_read_at_the_prompt_end_is_learnt_and_blind_to_the_state():
    """aux_readout=prompt reads the last prompt token, which attends to image and text only: the state
    the placeholders carry (proprio_injection=queries) cannot leak into the estimate."""
    torch.manual_seed(0)
    state = ("model.proprio_dim=3", "model.proprio_injection=queries")
    policy = make_policy(
        _aux_cfg("model.aux_readout=prompt", "model.aux_action_target=object_offset", *state),
        corpus=INSTRUCTIONS,
    )
    batch = make_batch(2, chunk=2, seed=7, size=56, state_dim=3)
    batch["aux.object_pos"] = torch.tensor([[0.1, -0.2, 0.02], [-0.15, 0.25, 0.1]])
    with pytest.raises(KeyError, match="'object_offset' needs 'aux.object_offset'"):
        policy(batch)
    batch["aux.object_offset"] = torch.tensor([[0.05, 0.1, -0.1], [-0.2, 0.0, -0.05]])
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    first = None
    for _ in range(30):
        loss, logs = policy(batch)
        first = first or {k: logs[k].item() for k in ("aux_l1", "aux_action_l1")}
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert logs["aux_l1"].item() < 0.5 * first["aux_l1"]
    assert logs["aux_action_l1"].item() < 0.5 * first["aux_action_l1"]

    def guess(readout: str, state: torch.Tensor) -> torch.Tensor:
        policy.config.aux_readout = readout
        obs = {**batch, "observation.state": state}
        patches, prompts = policy._encode_observation(obs)
        _, features = policy._l1_chunk(patches, prompts, policy._query_offset(obs, patches), with_aux=True)
        return policy.aux_guess(features)

    other = -batch["observation.state"]
    with torch.no_grad():
        torch.testing.assert_close(guess("prompt", other), guess("prompt", batch["observation.state"]))
        assert not torch.allclose(guess("actions", other), guess("actions", batch["observation.state"]))


def test_aux_readout_must_be_known():
    with pytest.raises(ValueError, match="aux_readout must be one of"):
        make_policy(_aux_cfg("model.aux_readout=cls"), corpus=INSTRUCTIONS)


def test_aux_target_needs_the_l1_head():
    with pytest.raises(ValueError, match="aux_target needs action_head='l1_chunk'"):
        make_policy(tiny_cfg("model.aux_target=object_pos", img=56), corpus=INSTRUCTIONS)


def test_sincos_position_init_codes_the_patch_grid_and_survives_saving(tmp_path):
    overrides = ("model.vision.0.pos_embed_init=sincos", "model.vision.1.pos_embed_init=sincos")
    cfg = model_cfg("openvla_tiny_128", *overrides)
    model = OpenVLAForActionPrediction(cfg)
    for vit in (model.vision_backbone.featurizer, model.vision_backbone.fused_featurizer):
        pe = vit.pos_embed[0].detach()
        assert pe.shape == (64, 64) and vit.pos_embed.requires_grad
        # distinct, unit-scale codes per patch (timm's default: N(0, 0.02) noise)
        assert pe.abs().max() <= 1.0 and pe.std() > 0.4
        # neighbours in the grid have more similar codes than far patches
        assert pe[0] @ pe[1] > pe[0] @ pe[7] and pe[0] @ pe[8] > pe[0] @ pe[63]
    plain = OpenVLAForActionPrediction(model_cfg("openvla_tiny_128")).vision_backbone.featurizer.pos_embed
    assert plain.std() < 0.05
    back = OpenVLAConfig.from_hf_dict(json.loads(json.dumps(cfg.to_hf_dict())))
    assert [v.pos_embed_init for v in back.vision] == ["sincos", "sincos"]
    with pytest.raises(ValueError, match=r"vision\[1\].pos_embed_init"):
        model_cfg("openvla_tiny_128", "model.vision.1.pos_embed_init=learned")


def test_init_scales_are_configurable_for_tiny_widths():
    default = OpenVLAForActionPrediction(model_cfg("openvla_tiny_128"))
    scaled = OpenVLAForActionPrediction(
        model_cfg(
            "openvla_tiny_128",
            "model.text.initializer_range=0.088",
            "model.vision.0.weight_init=jax",
            "model.vision.1.weight_init=jax",
        )
    )

    def stds(model):
        llm_q = model.language_model.model.layers[0].self_attn.q_proj.weight.std().item()
        vit_qkv = model.vision_backbone.featurizer.blocks[0].attn.qkv.weight.std().item()
        return llm_q, vit_qkv

    (llm_default, vit_default), (llm_scaled, vit_scaled) = stds(default), stds(scaled)
    assert abs(llm_default - 0.02) < 0.003 and abs(llm_scaled - 0.088) < 0.006
    # Xavier-uniform for a 64 -> 192 projection: sqrt(2 / 256)
    assert abs(vit_default - 0.02) < 0.003 and abs(vit_scaled - (2 / 256) ** 0.5) < 0.006
    back = OpenVLAConfig.from_hf_dict(json.loads(json.dumps(scaled.config.to_hf_dict())))
    assert back.text.initializer_range == 0.088 and back.vision[0].weight_init == "jax"
    with pytest.raises(ValueError, match=r"vision\[0\].weight_init"):
        model_cfg("openvla_tiny_128", "model.vision.0.weight_init=xavier")
    with pytest.raises(ValueError, match="initializer_range"):
        model_cfg("openvla_tiny_128", "model.text.initializer_range=0")


def test_two_cameras_pass_the_same_towers_and_both_reach_the_actions(tmp_path):
    """OpenVLA-OFT's multi-image input: each camera's patches, in order, from the shared towers."""
    torch.manual_seed(0)
    cfg = tiny_cfg(
        "model.action_head=l1_chunk", "model.chunk_size=2", "model.cameras=[agentview,wrist]", img=56
    )
    policy = make_policy(cfg, corpus=INSTRUCTIONS).eval()
    batch = make_batch(2, chunk=2, seed=4, size=56)
    batch["observation.images.wrist"] = torch.rand(2, 3, 56, 56, generator=torch.Generator().manual_seed(5))
    patches = policy.vision_patches(batch)
    per_image = policy.model.vision_backbone._patches
    proc = policy.processor
    with torch.no_grad():
        agent = per_image(proc.pixel_values(batch["observation.images.agentview"]), None)
        wrist = per_image(proc.pixel_values(batch["observation.images.wrist"]), None)
    torch.testing.assert_close(patches, torch.cat([agent, wrist], dim=1))
    with torch.no_grad():
        chunk = policy.predict_action_chunk(batch)
        changed = dict(batch, **{"observation.images.wrist": torch.zeros(2, 3, 56, 56)})
        assert (policy.predict_action_chunk(changed) - chunk).abs().max() > 1e-4
    # the processor checks every camera, and the cameras survive saving
    del changed["observation.images.wrist"]
    with pytest.raises(KeyError, match="wrist"):
        policy.predict_action_chunk(changed)
    policy.save_pretrained(tmp_path / "ckpt")
    again = load_policy(tmp_path / "ckpt").eval()
    assert again.config.cameras == ["agentview", "wrist"]
    torch.testing.assert_close(again.predict_action_chunk(batch), chunk)


def test_cameras_must_be_distinct():
    with pytest.raises(ValueError, match="distinct"):
        tiny_cfg("model.cameras=[agentview,agentview]")


def test_film_conditions_the_towers_on_the_instruction_and_survives_saving(tmp_path):
    """OFT+'s FiLM: the same image gives other patch features under another instruction."""
    torch.manual_seed(0)
    plain = make_policy(tiny_cfg("model.action_head=l1_chunk", img=56), corpus=INSTRUCTIONS).eval()
    filmed = make_policy(
        tiny_cfg("model.action_head=l1_chunk", "model.use_film=true", img=56), corpus=INSTRUCTIONS
    ).eval()
    batch = make_batch(2, seed=6, size=56)
    batch["observation.images.agentview"][1] = batch["observation.images.agentview"][0]
    batch["task"] = ["pick up the red block", "push the blue cube to the left"]
    with torch.no_grad():
        same = plain.vision_patches(batch)
        differ = filmed.vision_patches(batch)
    torch.testing.assert_close(same[0], same[1])
    assert (differ[0] - differ[1]).abs().max() > 1e-3
    assert any(k.startswith("vision_backbone.film.fused_featurizer.1.") for k in filmed.model.state_dict())
    filmed.save_pretrained(tmp_path / "ckpt")
    again = load_policy(tmp_path / "ckpt").eval()
    assert again.config.use_film
    torch.testing.assert_close(again.predict_action_chunk(batch), filmed.predict_action_chunk(batch))
