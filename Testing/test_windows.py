"""The numpy sliding window runs MONAI's windows with MONAI's weights: equal outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data.utils import compute_importance_map, dense_patch_slices
from monai.inferers import sliding_window_inference

from magms.windows import blend_weights, sliding_window, window_count, window_starts


def _network(window: np.ndarray) -> np.ndarray:
    """A position-dependent stand-in for a network: (B, 2, x, y, z) -> (B, 3, x, y, z) softmax."""
    ramp = np.linspace(-1, 1, window.shape[2], dtype=np.float32)[None, :, None, None]
    logits = np.stack([window[:, 0] * ramp[0], window[:, 1] - window[:, 0], np.sin(window.sum(axis=1))], axis=1)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("shape", [(40, 33, 27), (16, 50, 16), (10, 12, 9)])
@pytest.mark.parametrize("overlap", [0.5, 0.25, 0.0])
@pytest.mark.parametrize("mode", ["gaussian", "constant"])
def test_equal_to_monais_sliding_window_inference(shape, overlap, mode):
    window = (16, 16, 16)
    x = np.random.default_rng(0).normal(size=(2, *shape)).astype(np.float32)
    calls = []

    def progress(done: int, total: int) -> None:
        calls.append((done, total))

    ours = sliding_window(x, window, _network, overlap, mode, batch=3, progress=progress)
    expected = sliding_window_inference(
        torch.from_numpy(x)[None], window, 3, lambda w: torch.from_numpy(_network(w.numpy())), overlap=overlap, mode=mode,
    )[0].numpy()
    assert ours.shape == expected.shape == (3, *shape)
    np.testing.assert_allclose(ours, expected, atol=1e-6)
    total = window_count(shape, window, overlap)
    assert calls[-1] == (total, total) and len(calls) == -(-total // 3)


@pytest.mark.parametrize("shape", [(73, 84, 72), (48, 48, 48), (49, 100, 30)])
def test_windows_are_monais(shape):
    window = (48, 48, 48)
    padded = tuple(max(s, w) for s, w in zip(shape, window))
    interval = tuple(w if w == s else int(w * 0.5) for s, w in zip(padded, window))
    expected = [tuple(s.start for s in box) for box in dense_patch_slices(padded, window, interval)]
    assert window_starts(shape, window, 0.5) == expected


def test_blend_weights_are_monais():
    for mode in ("gaussian", "constant"):
        np.testing.assert_allclose(blend_weights((48, 40, 32), mode), compute_importance_map((48, 40, 32), mode=mode).numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="blend mode"):
        blend_weights((8, 8, 8), "cosine")
    with pytest.raises(ValueError, match="overlap"):
        window_starts((10, 10, 10), (8, 8, 8), 1.0)
