import numpy as np
import pytest
import torch

from vla_lab.policies.action_tokenizer import BinActionTokenizer

V = 32000  # the Llama-2 text vocabulary OpenVLA's action ids count down from


def test_extremes_and_zero_follow_the_digitize_rule():
    tok = BinActionTokenizer(V, 256)
    # digitize over linspace(-1, 1, 256): -1 falls in bin 1, +1 in bin 256, 0 between edges 127/128.
    ids = tok.encode(np.array([-1.0, 1.0, 0.0, -5.0, 5.0]))
    assert ids.tolist() == [V - 1, V - 256, V - 128, V - 1, V - 256]


def test_ids_are_the_last_256_of_the_vocabulary():
    tok = BinActionTokenizer(V, 256)
    ids = tok.encode(np.linspace(-1, 1, 10001))
    assert ids.min() == V - 256 and ids.max() == V - 1
    assert len(np.unique(ids)) == 256


def test_decode_uses_bin_centres_with_upstream_clipping():
    tok = BinActionTokenizer(V, 256)
    centres = (np.linspace(-1, 1, 256)[:-1] + np.linspace(-1, 1, 256)[1:]) / 2
    assert tok.decode(np.array([V - 1]))[0] == pytest.approx(centres[0])
    assert tok.decode(np.array([V - 255]))[0] == pytest.approx(centres[254])
    # id V-256 (the bin of +1.0) has index 255, clipped to the last centre.
    assert tok.decode(np.array([V - 256]))[0] == pytest.approx(centres[254])


def test_round_trip_error_is_at_most_half_a_bin():
    tok = BinActionTokenizer(V, 256)
    x = np.random.default_rng(0).uniform(-1, 1, 5000)
    err = np.abs(tok.decode(tok.encode(x)) - x)
    # x decodes to the centre of its own bin: at most half a bin width (1/255) away.
    assert err.max() <= 1 / 255 + 1e-6


def test_torch_input_keeps_shape_and_device():
    tok = BinActionTokenizer(1024, 256)
    x = torch.rand(2, 3, 7) * 2 - 1
    ids = tok.encode(x)
    assert ids.shape == x.shape and ids.dtype == torch.int64
    assert tok.is_action_token(ids).all()
    assert tok.decode(ids).shape == x.shape


def test_vocab_must_hold_the_bins():
    with pytest.raises(ValueError, match="vocab_size"):
        BinActionTokenizer(200, 256)
