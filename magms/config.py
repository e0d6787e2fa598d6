"""Frozen configuration records stored in a model bundle.

Each record turns into plain JSON with ``to_dict`` and back with ``from_dict``; an unknown or
missing key is a :class:`~magms.errors.ConfigError` naming the key, so a bundle written by a
newer MAGMS fails loudly instead of loading with silently different settings.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal, TypeVar

from magms.errors import ConfigError

__all__ = ["NetConfig", "PreprocessConfig", "BACKBONES"]

BACKBONES = ("unet", "unetr")

_T = TypeVar("_T", bound="_Record")


class _Record:
    """JSON round trip shared by the config dataclasses (tuples stored as lists)."""

    _where: ClassVar[str] = "config"

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[_T], data: Mapping[str, Any]) -> _T:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{cls._where}: expected a JSON object, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ConfigError(f"{cls._where}: unknown key(s) {', '.join(map(repr, unknown))}")
        required = [n for n, f in fields.items() if f.default is dataclasses.MISSING and n not in data]
        if required:
            raise ConfigError(f"{cls._where}: missing key(s) {', '.join(map(repr, required))}")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{cls._where}: {err}") from err


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclasses.dataclass(frozen=True)
class NetConfig(_Record):
    """Architecture of a MAG-MS network: which slots, which backbone, how wide.

    Defaults of the UNETR fields equal the reference ``magnet`` v2 UNETR (patch 16, hidden 768,
    MLP 3072, 12 heads, 12 layers, feature size 16, skips after transformer blocks 3/6/9 counted
    from 0, perceptron patch embedding); the U-Net fields equal its light U-Net (16-32-64-128).

    Args:
        slots: modality keys in the order of the input channels, e.g. ``("flair", "t1", "t1c", "t2")``.
        out_channels: number of output classes including background.
        backbone: ``"unet"`` (light, convolutional) or ``"unetr"`` (ViT encoders, as in the paper).
        img_size: patch size the network sees, (D, H, W); UNETR's position embedding is fixed to it,
            the U-Net accepts any size divisible by ``2 ** (len(channels) - 1)``.
        fuse_projection: a bias-free 1x1x1 convolution on every encoder output before fusion.
        feature_size, hidden_size, mlp_dim, num_heads, num_layers, patch_size, skip_layers,
            proj_type, res_block, flash_attention: UNETR settings. ``flash_attention`` uses
            ``torch.nn.functional.scaled_dot_product_attention`` (same weights, same result up to
            float rounding).
        channels: U-Net feature widths, shallow to deep.
        norm: normalisation of the convolutional blocks (MONAI name).
        dropout_rate: dropout inside the transformer.
        checkpointing: recompute encoder and decoder activations in the backward pass (less
            memory, about one more forward pass of time).
    """

    _where: ClassVar[str] = "network config"

    slots: tuple[str, ...]
    out_channels: int
    backbone: Literal["unet", "unetr"] = "unet"
    img_size: tuple[int, int, int] = (96, 96, 96)
    fuse_projection: bool = True
    feature_size: int = 16
    hidden_size: int = 768
    mlp_dim: int = 3072
    num_heads: int = 12
    num_layers: int = 12
    patch_size: int = 16
    skip_layers: tuple[int, int, int] = (3, 6, 9)
    proj_type: str = "perceptron"
    res_block: bool = True
    flash_attention: bool = True
    channels: tuple[int, ...] = (16, 32, 64, 128)
    norm: str = "instance"
    dropout_rate: float = 0.0
    checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if not self.slots or len(set(self.slots)) != len(self.slots):
            raise ValueError(f"slots must be non-empty and unique, got {self.slots}")
        if self.out_channels < 2:
            raise ValueError(f"out_channels must be >= 2 (background and one label), got {self.out_channels}")
        if len(self.img_size) != 3 or min(self.img_size) < 1:
            raise ValueError(f"img_size must be three positive ints, got {self.img_size}")
        if not 0.0 <= self.dropout_rate <= 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1], got {self.dropout_rate}")
        if self.backbone == "unetr":
            if self.hidden_size % self.num_heads:
                raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
            if self.patch_size != 16:
                # the UNETR decoder upsamples four times by 2: tokens must be 16 voxels wide
                raise ValueError(f"patch_size must be 16 for the UNETR decoder, got {self.patch_size}")
            if any(s % self.patch_size for s in self.img_size):
                raise ValueError(f"img_size {self.img_size} must be divisible by patch_size {self.patch_size}")
            if len(self.skip_layers) != 3 or not all(0 <= i < self.num_layers - 1 for i in self.skip_layers):
                raise ValueError(
                    f"skip_layers must be three block indices below num_layers - 1 = {self.num_layers - 1}, "
                    f"got {self.skip_layers}"
                )
        else:
            if len(self.channels) < 2 or min(self.channels) < 1:
                raise ValueError(f"channels must list at least two positive widths, got {self.channels}")
            factor = 2 ** (len(self.channels) - 1)
            if any(s % factor for s in self.img_size):
                raise ValueError(f"img_size {self.img_size} must be divisible by {factor} for {len(self.channels)} levels")

    @property
    def num_levels(self) -> int:
        """Number of feature levels fused (and passed from encoder to decoder)."""
        return 5 if self.backbone == "unetr" else len(self.channels)


#: Intensity normalisations a bundle may record (implemented in :mod:`magms.preprocessing`).
NORMALIZATIONS = ("zscore_foreground", "zscore_nonzero", "none")


@dataclasses.dataclass(frozen=True)
class PreprocessConfig(_Record):
    """How images are prepared before the network, so inference repeats training exactly.

    Args:
        spacing: working voxel spacing in mm (x, y, z); ``None`` keeps the reference image's.
        orientation: axis codes of the working grid (MONAI ``Orientation``), e.g. ``"RAS"``.
        normalization: ``"zscore_foreground"`` (per modality, inside the foreground above the
            background fill value, 0 outside; see :mod:`magms.preprocessing`), ``"zscore_nonzero"``
            (MONAI's non-zero z-score, recorded by bundles made before 0.2) or ``"none"``. Whatever the
            method, training crops each case to its foreground and inference runs on that box only.
        patch_size: sliding-window / training patch, (D, H, W) in working voxels.
        overlap: sliding-window overlap fraction in [0, 1).
        blend_mode: sliding-window blending, ``"gaussian"`` or ``"constant"``.
    """

    _where: ClassVar[str] = "preprocessing"

    spacing: tuple[float, float, float] | None = (1.0, 1.0, 1.0)
    orientation: str = "RAS"
    normalization: Literal["zscore_foreground", "zscore_nonzero", "none"] = "zscore_foreground"
    patch_size: tuple[int, int, int] = (96, 96, 96)
    overlap: float = 0.5
    blend_mode: Literal["gaussian", "constant"] = "gaussian"

    def __post_init__(self) -> None:
        if self.spacing is not None and (
            len(self.spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in self.spacing)
        ):
            raise ValueError(f"spacing must be three positive numbers, got {self.spacing}")
        if len(self.orientation) != 3:
            raise ValueError(f"orientation must be three axis codes such as 'RAS', got {self.orientation!r}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {self.normalization!r}")
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise ValueError(f"patch_size must be three positive ints, got {self.patch_size}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.blend_mode not in ("gaussian", "constant"):
            raise ValueError(f"blend_mode must be 'gaussian' or 'constant', got {self.blend_mode!r}")


def as_tuple3(value: int | Sequence[int]) -> tuple[int, int, int]:
    """``96`` -> ``(96, 96, 96)``; a 3-sequence -> a tuple."""
    if isinstance(value, int):
        return (value, value, value)
    t = tuple(int(v) for v in value)
    if len(t) != 3:
        raise ValueError(f"expected one int or three, got {value}")
    return t  # type: ignore[return-value]
