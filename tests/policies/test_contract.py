import math

import pytest
import torch

from vla_lab.policies.contract import TemporalEnsembler, VLAPolicy, check_images


class CountingPolicy(VLAPolicy):
    """Predicts chunks whose values encode (call index, step) so queue order is observable."""

    def __init__(self, chunk: int, **kw):
        super().__init__(chunk, **kw)
        self.calls = 0

    def forward(self, batch):
        raise NotImplementedError

    def predict_action_chunk(self, observation):
        self.calls += 1
        steps = torch.arange(self.chunk_size, dtype=torch.float32)
        return (100 * self.calls + steps).view(1, -1, 1).repeat(2, 1, 3)


def test_queue_serves_n_action_steps_then_replans():
    p = CountingPolicy(4, n_action_steps=3)
    got = [p.select_action({})[0, 0].item() for _ in range(7)]
    assert got == [100, 101, 102, 200, 201, 202, 300]
    p.reset()
    assert p.select_action({})[0, 0].item() == 400


def test_temporal_ensembling_matches_explicit_weighted_average():
    coeff, k = 0.3, 4
    ens = TemporalEnsembler(coeff, k)
    chunks = [torch.randn(1, k, 2) for _ in range(6)]
    for t, chunk in enumerate(chunks):
        out = ens.update(chunk)
        # Predictions made at steps s <= t cover step t at offset t - s; oldest gets weight exp(0).
        preds = [(chunks[s][0, t - s], t - s) for s in range(max(0, t - k + 1), t + 1)]
        weights = [math.exp(-coeff * i) for i in range(len(preds))]
        oldest_first = [p for p, _ in sorted(preds, key=lambda x: -x[1])]
        expected = sum(w * p for w, p in zip(weights, oldest_first, strict=True)) / sum(weights)
        torch.testing.assert_close(out[0], expected, atol=1e-5, rtol=1e-5)


def test_ensembling_requires_single_step_execution():
    with pytest.raises(ValueError, match="n_action_steps=1"):
        CountingPolicy(4, n_action_steps=2, temporal_ensemble_coeff=0.1)


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (torch.rand(1, 3, 64, 64), "must be 224x224"),
        (torch.rand(1, 4, 224, 224), "3 channels"),
        (torch.rand(3, 224, 224), r"\(B, 3, H, W\)"),
        (torch.zeros(1, 3, 224, 224, dtype=torch.uint8), "float"),
    ],
)
def test_image_checks_name_the_problem(image, match):
    with pytest.raises(ValueError, match=match):
        check_images({"observation.images.agentview": image}, ["agentview"], 224)


def test_missing_camera_lists_present_ones():
    with pytest.raises(KeyError, match="observation.images.wrist"):
        check_images({"observation.images.wrist": torch.rand(1, 3, 8, 8)}, ["agentview"], 8)
