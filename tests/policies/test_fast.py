"""FAST action tokenization (DCT + BPE) and OpenVLA's ``action_head=fast``."""

import json
import math
import re

import numpy as np
import pytest
import torch

from tests.policies.conftest import INSTRUCTIONS, make_batch, model_cfg, norm_entry, peft_cfg, tiny_cfg
from vla_lab.policies.factory import load_policy, make_policy
from vla_lab.policies.fast_tokenizer import (
    CONFIG_FILE,
    TOKENIZER_FILE,
    FastActionTokenizer,
    dequantize,
    from_llm_ids,
    quantize,
    to_llm_ids,
)

K, A = 8, 7


def smooth_chunks(n: int, chunk: int = K, dim: int = A, seed: int = 0) -> np.ndarray:
    """Normalized chunks a demonstration could hold: an offset, a ramp and a slow sinusoid per dim."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, chunk)[None, :, None]
    offset, slope, amp = (rng.uniform(lo, hi, (n, 1, dim)) for lo, hi in ((-0.4, 0.4), (-0.3, 0.3), (0, 0.3)))
    phase = rng.uniform(0, 2 * np.pi, (n, 1, dim))
    return np.clip(offset + slope * t + amp * np.sin(np.pi * t + phase), -1, 1)


@pytest.fixture(scope="module")
def fitted():
    return FastActionTokenizer.fit(smooth_chunks(2000), scale=10.0, vocab_size=256)


# ---- the tokenizer ----
@pytest.mark.parametrize("scale", [10.0, 50.0])
def test_round_trip_is_exact_up_to_coefficient_rounding(scale):
    fast = FastActionTokenizer.fit(smooth_chunks(500), scale=scale, vocab_size=1024)
    x = smooth_chunks(200, seed=1)
    decoded, malformed = fast.decode(fast.encode(x))
    assert not malformed.any()
    # BPE is lossless: decoding gives exactly the rounded coefficients' inverse DCT.
    expected = np.stack([dequantize(q.reshape(K, A), scale) for q in quantize(x, scale)])
    np.testing.assert_array_equal(decoded, expected)
    # Orthonormal DCT: each coefficient is off by <= 0.5/scale, so any value by <= 0.5·sqrt(K)/scale.
    err = np.abs(decoded - x)
    assert err.max() <= 0.5 * math.sqrt(K) / scale + 1e-6
    # Typical error: uniform rounding, RMS 0.29/scale per coefficient (and per value).
    assert np.sqrt((err**2).mean()) < 0.35 / scale


def test_smooth_chunks_take_fewer_tokens_than_bins(fitted):
    lengths = [len(r) for r in fitted.encode(smooth_chunks(500, seed=2))]
    # 56 bin tokens per chunk; measured 13.3 FAST tokens on average (at most 20) on these chunks.
    assert max(lengths) < K * A
    assert np.mean(lengths) < 0.5 * K * A
    assert fitted.n_tokens == 256


def test_coefficients_are_ordered_low_frequency_first():
    x = smooth_chunks(1)
    q = quantize(x, 10.0).reshape(K, A)
    dc = np.rint(x[0].sum(0) / math.sqrt(K) * 10)  # coefficient 0 of every dimension comes first
    np.testing.assert_array_equal(q[0], dc)


def test_malformed_sequences_decode_deterministically_without_raising(fitted):
    good = fitted.encode(smooth_chunks(1, seed=3))[0]
    before = dict(fitted.counts)
    rows = [[], good + good, [-5, 10**6], good[:-1], good]
    out, malformed = fitted.decode(rows)
    assert out.shape == (5, K, A) and out.dtype == np.float32 and np.isfinite(out).all()
    assert malformed.tolist() == [True, True, True, True, False]
    np.testing.assert_array_equal(out[0], 0)  # nothing decodable: zero coefficients, zero actions
    np.testing.assert_array_equal(out[1], out[4])  # too long: extra coefficients dropped
    # Too short: the missing high-frequency coefficients are zero.
    q = np.zeros(K * A, np.int64)
    text = "".join(fitted.bpe.id_to_token(i) for i in good[:-1])
    q[: len(text)] = [ord(c) - 0x4E00 + fitted.spec.min_coeff for c in text]
    np.testing.assert_array_equal(out[3], dequantize(q.reshape(K, A), fitted.spec.scale))
    assert fitted.counts["malformed"] - before["malformed"] == 4
    assert fitted.counts["unknown_ids"] - before["unknown_ids"] == 2
    np.testing.assert_array_equal(fitted.decode(rows)[0], out)  # deterministic


def test_values_beyond_the_alphabet_are_clipped_and_counted(fitted):
    x = smooth_chunks(1, seed=4)
    x[0, :, 0] = 40.0  # far outside [-1, 1] (e.g. mean_std normalization of an outlier)
    before = fitted.counts["clipped"]
    decoded, malformed = fitted.decode(fitted.encode(x))
    assert not malformed.any() and fitted.counts["clipped"] > before
    assert decoded[0, :, 0].max() < 40.0


def test_save_and_load_reproduce_ids_and_actions(fitted, tmp_path):
    fitted.save(tmp_path / "fast")
    assert {p.name for p in (tmp_path / "fast").iterdir()} == {TOKENIZER_FILE, CONFIG_FILE}
    loaded = FastActionTokenizer.load(tmp_path / "fast")
    assert loaded.spec == fitted.spec
    x = smooth_chunks(100, seed=5)
    assert loaded.encode(x) == fitted.encode(x)
    np.testing.assert_array_equal(loaded.decode(fitted.encode(x))[0], fitted.decode(fitted.encode(x))[0])
    saved = json.loads((tmp_path / "fast" / CONFIG_FILE).read_text())
    assert saved["scale"] == 10.0 and saved["chunk_size"] == K and saved["min_coeff"] == fitted.spec.min_coeff
    (tmp_path / "fast" / TOKENIZER_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=TOKENIZER_FILE):
        FastActionTokenizer.load(tmp_path / "fast")


def test_fitting_is_deterministic():
    x = smooth_chunks(300, seed=6)
    a, b = (FastActionTokenizer.fit(x, 10.0, 128) for _ in range(2))
    assert a.bpe.to_str() == b.bpe.to_str()


def test_a_vocabulary_smaller_than_the_alphabet_is_refused():
    with pytest.raises(ValueError, match=r"fast_vocab_size is 40.*model.fast_scale"):
        FastActionTokenizer.fit(smooth_chunks(10), scale=10.0, vocab_size=40)


def test_language_model_ids_count_down_from_the_end_of_the_vocabulary():
    assert to_llm_ids([0, 1, 255], 768).tolist() == [767, 766, 512]
    assert from_llm_ids([767, 512, 100, 800], 768) == [0, 255, 667, -33]


# ---- configuration ----
@pytest.mark.parametrize("preset", ["openvla_tiny", "openvla_tiny_128", "openvla_small", "openvla_7b"])
def test_every_openvla_preset_accepts_the_fast_head(preset):
    cfg = model_cfg(preset, "model.action_head=fast", "model.chunk_size=8")
    assert cfg.action_head == "fast" and cfg.n_action_ids == cfg.fast_vocab_size == 256


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (
            ["model.fast_vocab_size=40"],
            r"fast_vocab_size=40 cannot hold the 59 coefficient symbols.*fast_scale=10",
        ),
        (["model.fast_scale=0"], "fast_scale must be > 0"),
        (["model.fast_vocab_size=600"], r"text_vocab_size=768 - fast_vocab_size=600 leaves 168 ids"),
        (["model.fast_vocab_size=767", "model.tokenizer=/nowhere"], r"special tokens.*eos"),
    ],
)
def test_invalid_fast_settings_name_the_fields(overrides, match):
    with pytest.raises(ValueError, match=match):
        model_cfg("openvla_tiny", "model.action_head=fast", "model.chunk_size=8", *overrides)


def test_config_round_trips_with_the_fast_fields():
    from vla_lab.policies.openvla.configuration_openvla import OpenVLAConfig

    cfg = model_cfg("openvla_tiny", "model.action_head=fast", "model.chunk_size=4", "model.fast_scale=20")
    assert OpenVLAConfig.from_hf_dict(json.loads(json.dumps(cfg.to_hf_dict()))) == cfg


def test_the_fast_head_needs_action_chunks_to_fit_its_tokenizer():
    cfg = tiny_cfg("model.action_head=fast", "model.chunk_size=4", img=56)
    with pytest.raises(ValueError, match=re.escape("action_chunks=datamodule.action_chunks()")):
        make_policy(cfg, corpus=INSTRUCTIONS)
    with pytest.raises(ValueError, match=r"model.chunk_size=4.*\(N, 4, 7\)"):
        make_policy(cfg, corpus=INSTRUCTIONS, action_chunks=smooth_chunks(20, chunk=8))


# ---- the policy ----
CHUNK = 4


def fast_policy(**kw):
    torch.manual_seed(0)
    cfg = tiny_cfg("model.action_head=fast", f"model.chunk_size={CHUNK}", img=56)
    return make_policy(cfg, corpus=INSTRUCTIONS, action_chunks=smooth_chunks(500, chunk=CHUNK), **kw)


def two_chunk_batch(policy) -> dict:
    """Two samples whose FAST sequences differ in length: a still chunk and a moving one."""
    batch = make_batch(2, chunk=CHUNK, seed=1, size=56)
    still = np.zeros((CHUNK, A))
    moving = smooth_chunks(1, chunk=CHUNK, seed=7)[0]
    batch["action"] = torch.tensor(np.stack([still, moving]), dtype=torch.float32)
    lengths = [len(r) for r in policy.fast_tokenizer.encode(batch["action"].numpy())]
    assert lengths[0] < lengths[1]
    return batch


@pytest.fixture(scope="module")
def trained():
    policy = fast_policy(norm_stats={"demo": norm_entry()})
    batch = two_chunk_batch(policy)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    losses, logs = [], {}
    for _ in range(40):
        loss, logs = policy(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return policy.eval(), batch, losses, logs


@pytest.mark.timeout(120)
def test_tiny_fast_head_trains_and_predicts_chunks(trained):
    policy, batch, losses, logs = trained
    assert losses[-1] < 0.3 * losses[0]
    assert {
        "token_accuracy",
        "l1_error",
        "direction_accuracy",
        "gripper_accuracy",
        "fast_malformed_rate",
    } <= set(logs)
    assert float(logs["token_accuracy"]) > 0.9
    assert float(logs["fast_tokens_per_chunk"]) < CHUNK * A
    pred = policy.predict_action_chunk(batch)
    assert pred.shape == (2, CHUNK, A) and pred.dtype == torch.float32
    # Memorised: the decoded chunks sit within the rounding tolerance of the targets.
    assert (pred - batch["action"]).abs().max() < 0.5 * math.sqrt(CHUNK) / 10 + 1e-4


@pytest.mark.timeout(60)
def test_batch_decoding_handles_rows_that_finish_at_different_times(trained):
    policy, batch, _, _ = trained
    patches, prompts = policy._encode_observation(batch)
    rows = policy.generate_fast_ids(patches, prompts)
    assert len(rows[0]) < len(rows[1])  # the still chunk's row emits </s> first
    vocab = policy.config.vocab_size
    assert all(vocab - policy.fast_tokenizer.n_tokens <= i < vocab for r in rows for i in r)
    together = policy.predict_action_chunk(batch)
    for i in range(2):
        one = {k: v[i : i + 1] for k, v in batch.items()}
        assert policy.generate_fast_ids(*policy._encode_observation(one)) == rows[i : i + 1]
        torch.testing.assert_close(policy.predict_action_chunk(one), together[i : i + 1], atol=1e-5, rtol=0)


@pytest.mark.timeout(120)
def test_checkpoint_reproduces_the_tokenizer_and_the_actions(trained, tmp_path):
    policy, batch, _, _ = trained
    before = policy.predict_action_chunk(batch)
    policy.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "fast_tokenizer" / TOKENIZER_FILE).is_file()
    loaded = load_policy(tmp_path / "ckpt").eval()
    assert loaded.config.action_head == "fast"
    assert loaded.processor.steps == policy.processor.steps
    assert loaded.fast_tokenizer.bpe.to_str() == policy.fast_tokenizer.bpe.to_str()
    assert torch.equal(loaded.predict_action_chunk(batch), before)
    loss_a, _ = policy(batch)
    loss_b, _ = loaded(batch)
    torch.testing.assert_close(loss_a, loss_b)


@pytest.mark.timeout(60)
def test_a_checkpoint_whose_tokenizer_disagrees_with_its_config_is_refused(trained, tmp_path):
    policy, _, _, _ = trained
    policy.save_pretrained(tmp_path / "ckpt")
    path = tmp_path / "ckpt" / "fast_tokenizer" / CONFIG_FILE
    raw = json.loads(path.read_text())
    raw["scale"] = 20.0
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"fast_tokenizer/\S+: \d+ bytes, checkpoint_manifest.json says"):
        load_policy(tmp_path / "ckpt")  # the manifest notices the edit first
    # a checkpoint assembled by hand has no manifest: the tokenizer check itself refuses it
    (tmp_path / "ckpt" / "checkpoint_manifest.json").unlink()
    with pytest.raises(ValueError, match=r"model.fast_scale=10.0 but the tokenizer has 20.0"):
        load_policy(tmp_path / "ckpt")


@pytest.mark.timeout(180)
def test_a_tokens_checkpoint_fine_tunes_with_the_fast_head(tmp_path):
    torch.manual_seed(0)
    base = make_policy(tiny_cfg(img=56), corpus=INSTRUCTIONS)
    base.save_pretrained(tmp_path / "base")
    cfg = tiny_cfg("model.action_head=fast", f"model.chunk_size={CHUNK}", img=56)
    cfg.pretrained = str(tmp_path / "base")
    lora = peft_cfg("lora_light")
    with pytest.raises(ValueError, match="holds no FAST tokenizer"):
        make_policy(cfg, lora)
    tuned = make_policy(cfg, lora, action_chunks=smooth_chunks(300, chunk=CHUNK))
    assert tuned.config.action_head == "fast" and tuned.config.chunk_size == CHUNK
    assert [s["step"] for s in tuned.processor.steps][3] == "fast_tokens"
    batch = make_batch(2, chunk=CHUNK, seed=8, size=56)
    loss, _ = tuned(batch)
    loss.backward()
    tuned.eval()
    before = tuned.predict_action_chunk(batch)
    tuned.save_pretrained(tmp_path / "tuned")
    loaded = load_policy(tmp_path / "tuned").eval()
    assert loaded.config.action_head == "fast"
    torch.testing.assert_close(loaded.predict_action_chunk(batch), before)


def test_an_l1_chunk_checkpoint_cannot_switch_to_the_fast_head(tmp_path):
    make_policy(tiny_cfg("model.action_head=l1_chunk", img=56), corpus=INSTRUCTIONS).save_pretrained(tmp_path)
    cfg = tiny_cfg("model.action_head=fast", img=56)
    cfg.pretrained = str(tmp_path)
    with pytest.raises(ValueError, match="action_head='l1_chunk'.*'tokens' or 'fast' checkpoint"):
        make_policy(cfg, action_chunks=smooth_chunks(20, chunk=1))


# ---- data ----
def test_datamodule_gives_normalized_training_chunks(demo_file):
    from vla_lab.data.datamodule import DemoDataModule

    dm = DemoDataModule(sources=[{"path": str(demo_file)}], chunk_size=4, batch_size=2, image_size=32)
    dm.setup()
    chunks = dm.action_chunks()
    assert chunks.shape == (len(dm.train_set), 4, 7) and chunks.dtype == np.float32
    sample = dm.train_set[5]
    # The same targets a training sample holds (before augmentation, which these settings leave off).
    np.testing.assert_allclose(chunks[5], sample["action"].numpy(), atol=1e-6)
    few = dm.action_chunks(max_chunks=10, seed=1)
    assert few.shape == (10, 4, 7)
    np.testing.assert_array_equal(few, dm.action_chunks(max_chunks=10, seed=1))
    assert np.abs(chunks[..., :6]).max() <= 1.0  # bounds_q99 normalization clips


def test_planner_answers_for_the_fast_head():
    from vla_lab.cli.model import plan_from_cfg
    from vla_lab.config.compose import compose

    out = plan_from_cfg(
        compose("model", ["model=openvla_tiny", "model.action_head=fast", "model.chunk_size=8"])
    )
    assert out["action_head"] == "fast" and out["total_params"] > 0


@pytest.mark.timeout(60)
def test_kv_cache_decoding_equals_full_recompute(trained):
    from vla_lab.policies.openvla.sequence_openvla import assemble

    policy, batch, _, _ = trained
    patches, prompts = policy._encode_observation(batch)
    eos = policy.config.text.eos_token_id
    expected = []
    with torch.no_grad():
        for b in range(2):
            ids = torch.empty(1, 0, dtype=torch.long)
            while ids.shape[1] < CHUNK * A and (ids.shape[1] == 0 or ids[0, -1] != eos):
                suffix = policy.model.embed_tokens(ids) if ids.shape[1] else None
                seq = assemble(policy.model, patches[b : b + 1], prompts[b : b + 1], suffix)
                logits = policy.model.language_model.lm_head(policy._hidden(seq).last_hidden_state[:, -1])
                allowed = policy._fast_logit_mask(logits.shape[-1], logits.device)
                ids = torch.cat(
                    [ids, logits.masked_fill(~allowed, float("-inf")).argmax(-1, keepdim=True)], 1
                )
            row = ids[0].tolist()
            expected.append(row[: row.index(eos)] if eos in row else row)
    assert policy.generate_fast_ids(patches, prompts) == expected
