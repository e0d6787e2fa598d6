"""Training augmentation presets (magms.data.augment): shapes, labels, determinism, thick slices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from magms.config import TrainConfig
from magms.data.augment import RandThickSlicesd, _thick_slices, augmentation_transforms
from magms.errors import ConfigError


def _patch(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    image = MetaTensor(torch.randn(4, 32, 32, 32, generator=generator))
    label = MetaTensor(torch.randint(0, 4, (1, 32, 32, 32), generator=generator).float())
    return {"image": image, "label": label}


@pytest.mark.parametrize("preset", ["light", "strong"])
def test_presets_keep_shapes_and_label_values_and_repeat_with_the_seed(preset):
    outs = []
    for _ in range(2):
        augment = Compose(augmentation_transforms(preset))
        augment.set_random_state(seed=3)
        outs.append([augment(_patch(i)) for i in range(6)])
    for a, b in zip(*outs):
        assert a["image"].shape == (4, 32, 32, 32) and a["label"].shape == (1, 32, 32, 32)
        assert set(torch.unique(a["label"]).tolist()) <= {0.0, 1.0, 2.0, 3.0}  # nearest-neighbour: no new label values
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])  # exact resume relies on it


def test_strong_changes_the_geometry_light_does_not_rotate():
    strong = Compose(augmentation_transforms("strong"))
    strong.set_random_state(seed=0)
    patch = _patch()
    moved = [strong(patch) for _ in range(20)]
    # some draws rotate or scale: the label is then no mirror image of the input's
    mirrors = [torch.flip(patch["label"], dims) for dims in ([], [1], [2], [3], [1, 2], [1, 3], [2, 3], [1, 2, 3])]
    assert any(not any(torch.equal(m["label"], f) for f in mirrors) for m in moved)


def test_thick_slices_average_slabs_along_one_axis_and_keep_the_grid():
    ramp = torch.arange(6.0).reshape(1, 1, 1, 6).expand(1, 2, 2, 6).clone()
    out = _thick_slices(ramp, axis=2, factor=2)
    assert out.shape == ramp.shape
    assert np.allclose(out[0, 0, 0].numpy(), [0.5, 1.0, 2.0, 3.0, 4.0, 4.5])  # slab means 0.5, 2.5, 4.5, linearly between
    assert torch.equal(_thick_slices(ramp, axis=0, factor=2), ramp)  # constant along that axis: unchanged
    odd = torch.randn(2, 7, 9, 11)
    assert _thick_slices(odd, axis=1, factor=3).shape == odd.shape
    always = RandThickSlicesd(keys="image", prob=1.0)
    always.set_random_state(seed=1)
    assert not torch.equal(always({"image": odd})["image"], odd)


def test_an_unknown_preset_is_refused_by_the_training_record():
    with pytest.raises(ValueError, match="augmentation must be one of light, strong, got 'heavy'"):
        TrainConfig(augmentation="heavy")
    with pytest.raises(ValueError):
        augmentation_transforms("heavy")
    assert TrainConfig.from_dict({**TrainConfig().to_dict(), "augmentation": "strong"}).augmentation == "strong"
    with pytest.raises(ConfigError, match="augmentation"):
        TrainConfig.from_dict({**TrainConfig().to_dict(), "augmentation": 3})
