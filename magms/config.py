"""Frozen configuration records stored in a model bundle.

Each record turns into plain JSON with ``to_dict`` and back with ``from_dict``; an unknown or
missing key is a :class:`~magms.errors.ConfigError` naming the key, so a bundle written by a
newer MAGMS fails loudly instead of loading with silently different settings. The same
``_Record`` base serves the label scheme records of :mod:`magms.labels` and ``TrainConfig``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from magms.errors import ConfigError
from magms.fields import option
from magms.typehints import field_types, split_optional, tuple_item

if TYPE_CHECKING:  # the schemes build on these records: no import at run time
    from magms.labels import LabelScheme

__all__ = ["NetConfig", "PreprocessConfig", "TrainConfig", "BACKBONES", "POLICIES", "LR_SCHEDULES", "AUGMENTATIONS", "SEG_LOSSES"]

BACKBONES = ("unet", "unetr")

_T = TypeVar("_T", bound="_Record")

# Scalar field type -> (wording of one value, wording of list items, check of a JSON value). An int
# passes where a float is expected (a hand-written file says 1 for 1.0); bool, a subclass of int,
# passes only as bool (``true`` is no channel count).
_SCALARS: dict[type, tuple[str, str, Callable[[Any], bool]]] = {
    str: ("a string", "strings", lambda v: isinstance(v, str)),
    bool: ("true or false", "true/false values", lambda v: isinstance(v, bool)),
    int: ("an integer", "integers", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    float: ("a number", "numbers", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
}


class _Record:
    """JSON round trip shared by the frozen dataclasses stored in a bundle.

    The dataclass field types drive both directions. ``to_dict`` writes a nested record as a JSON
    object, a tuple as a list, ``None`` as ``null``. ``from_dict`` refuses unknown and missing keys,
    checks str, int, bool and float values (also as tuple items, ``Literal`` by its values' type and
    ``X | None``), builds nested records and tuples of records with their own ``from_dict``, then
    calls the constructor, whose ``TypeError``/``ValueError`` becomes a :class:`ConfigError`.
    Lengths and ranges are left to ``__post_init__``, which words them for each record.

    Class variables:
        _where: how messages name the record (``"network config"``); an item of a tuple of records
            is named ``"<parent where> <item _where> #<index>"``, a nested record
            ``"<parent where> <field name>"``.
        _key_order: JSON key order when it differs from the field order (kept for files already
            written); empty for the field order.

    A field's ``metadata["expects"]`` words its type error (``"three integers 0..255"``) instead
    of the wording derived from its type. Fields with ``init=False`` are derived, not stored.
    """

    _where: ClassVar[str] = "config"
    _key_order: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data; :meth:`from_dict` gives an equal record back."""
        names = list(_stored_fields(type(self)))
        if self._key_order:
            names.sort(key=self._key_order.index)  # a field missing from the order raises: a bug
        return {name: _plain(getattr(self, name)) for name in names}

    @classmethod
    def from_dict(cls: type[_T], data: Mapping[str, Any], where: str | None = None) -> _T:
        """The inverse of :meth:`to_dict`.

        Args:
            data: a JSON object.
            where: how messages name the record; ``None`` for the class's ``_where``.

        Raises:
            ConfigError: not an object, an unknown or missing key, a value of the wrong type, or a
                value the record refuses; the message starts with ``where``.
        """
        where = where or cls._where
        fields = _stored_fields(cls)
        _check_keys(data, fields, where)
        hints = field_types(cls)
        kwargs = {name: _parse(value, hints[name], fields[name], where) for name, value in data.items()}
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}: {err}") from err


@functools.cache
def _stored_fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def _check_keys(data: Any, fields: Mapping[str, dataclasses.Field[Any]], where: str) -> None:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}")
    missing = [
        name
        for name, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and name not in data
    ]
    if missing:
        raise ConfigError(f"{where}: missing key(s) {', '.join(map(repr, missing))}")


def _parse(value: Any, hint: Any, field: dataclasses.Field[Any], where: str) -> Any:
    """A JSON value as the field's type: checked scalars, tuples, records; others pass as they are."""
    hint, optional = split_optional(hint)
    if value is None and optional:
        return None
    if isinstance(hint, type) and issubclass(hint, _Record):
        return hint.from_dict(value, f"{where} {field.name}")
    if typing.get_origin(hint) is tuple:
        item = tuple_item(hint)
        if not isinstance(value, (list, tuple)):
            raise _type_error(value, hint, field, where)
        if isinstance(item, type) and issubclass(item, _Record):
            return tuple(item.from_dict(v, f"{where} {item._where} #{i}") for i, v in enumerate(value))
        if not all(_fits(v, item) for v in value):
            raise _type_error(value, hint, field, where)
        return tuple(value)
    if not _fits(value, hint):
        raise _type_error(value, hint, field, where)
    return value


def _scalar(hint: Any) -> type | None:
    if typing.get_origin(hint) is Literal:
        kinds = {type(a) for a in typing.get_args(hint)}
        hint = kinds.pop() if len(kinds) == 1 else None
    return hint if hint in _SCALARS else None


def _fits(value: Any, hint: Any) -> bool:
    kind = _scalar(hint)
    return kind is None or _SCALARS[kind][2](value)


def _type_error(value: Any, hint: Any, field: dataclasses.Field[Any], where: str) -> ConfigError:
    expects = field.metadata.get("expects") or _describe(hint)
    return ConfigError(f"{where}: '{field.name}' must be {expects}, got {value!r}")


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is tuple:
        item = tuple_item(hint)
        if isinstance(item, type) and issubclass(item, _Record):
            return f"a list of {item._where} objects"
        kind = _scalar(item)
        return f"a list of {_SCALARS[kind][1]}" if kind else "a list"
    kind = _scalar(hint)
    return _SCALARS[kind][0] if kind else f"of type {hint}"


def _plain(value: Any) -> Any:
    if isinstance(value, _Record):
        return value.to_dict()
    return [_plain(v) for v in value] if isinstance(value, tuple) else value


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
        click_regions: regions the user's clicks can name (:class:`~magms.networks.guidance.ClickGuidance`);
            0: a network that takes no clicks. U-Net backbone only.
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
    click_regions: int = 0

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
        if self.click_regions < 0 or (self.click_regions and self.backbone != "unet"):
            raise ValueError(f"click_regions must be 0, or positive with the unet backbone, got {self.click_regions} ({self.backbone})")
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


#: Intensity normalisations a bundle may record (implemented in :mod:`magms.data.preprocessing`).
NORMALIZATIONS = ("zscore_foreground", "zscore_nonzero", "none")


@dataclasses.dataclass(frozen=True)
class PreprocessConfig(_Record):
    """How images are prepared before the network, so inference repeats training exactly.

    Args:
        spacing: working voxel spacing in mm (x, y, z); ``None`` keeps the reference image's.
        orientation: axis codes of the working grid (MONAI ``Orientation``), e.g. ``"RAS"``.
        normalization: ``"zscore_foreground"`` (per modality, inside the foreground above the
            background fill value, 0 outside; see :mod:`magms.data.preprocessing`), ``"zscore_nonzero"``
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


#: Subset policies of training (see :mod:`magms.training`).
SIZE_RULE_SCOPES = ("component", "total")


@dataclasses.dataclass(frozen=True)
class SizeRule(_Record):
    """Too little of a structure is relabelled: one post-processing rule.

    Args:
        target: a region key (``wt``) or label key (``enhancing``) of the bundle's scheme.
        min_ml: the smallest volume kept, in ml.
        replace_with: the label key its voxels get when smaller (``background``, ``necrotic_core``).
        scope: ``"component"``: each 26-connected component of ``target`` below ``min_ml`` is
            relabelled (spurious specks); ``"total"``: all of ``target`` is relabelled when its whole
            volume is below ``min_ml`` (BraTS practice for a tiny enhancing region).
    """

    _where: ClassVar[str] = "size rule"

    target: str
    min_ml: float
    replace_with: str
    scope: Literal["component", "total"] = "component"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_ml) and self.min_ml >= 0):
            raise ValueError(f"min_ml must be a volume >= 0 in ml, got {self.min_ml}")
        if self.scope not in SIZE_RULE_SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SIZE_RULE_SCOPES)}, got {self.scope!r}")


@dataclasses.dataclass(frozen=True)
class PostprocessConfig(_Record):
    """What inference does beyond the network, recorded in the bundle so every user gets the same.

    Args:
        size_rules: applied in order to the label map on the reference grid (see :class:`SizeRule`).
        flip_axes: test-time augmentation: the softmax is averaged over every combination of flips
            of these working-grid axes (0, 1, 2: ``x``, ``y``, ``z``), ``2**len`` network runs;
            empty for none.
    """

    _where: ClassVar[str] = "postprocessing"

    size_rules: tuple[SizeRule, ...] = ()
    flip_axes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if len(set(self.flip_axes)) != len(self.flip_axes) or not set(self.flip_axes) <= {0, 1, 2}:
            raise ValueError(f"flip_axes must be distinct axes among 0, 1, 2, got {list(self.flip_axes)}")

    def check_against(self, scheme: LabelScheme) -> None:
        """Every rule names a region or label of ``scheme`` and replaces with one of its labels.

        Raises:
            ConfigError: the first rule that does not fit, named.
        """
        regions = {r.key for r in scheme.regions}
        for n, rule in enumerate(self.size_rules):
            if rule.target not in regions and rule.target not in scheme.keys:
                raise ConfigError(f"postprocessing size rule #{n}: '{rule.target}' is no region or label of scheme '{scheme.key}'")
            if rule.replace_with not in scheme.keys:
                raise ConfigError(f"postprocessing size rule #{n}: '{rule.replace_with}' is no label of scheme '{scheme.key}'")


POLICIES = ("paper", "random_subset")
#: ``--lr-schedule`` choices: after the warm-up, ``cosine`` to 0 at the end, or ``constant``.
LR_SCHEDULES = ("cosine", "constant")
#: ``--augmentation`` choices (:mod:`magms.data.augment`; kept here so that the config needs no torch import).
AUGMENTATIONS = ("light", "strong")
#: ``--seg-loss`` choices: Dice+CE over the labels, or CE over the labels and Dice over the scheme's regions.
SEG_LOSSES = ("labels", "regions")


@dataclasses.dataclass(frozen=True)
class TrainConfig(_Record):
    """Training options, recorded in the bundle.

    Each field carries its help and range (:func:`magms.fields.option`), from which ``magms train``
    makes its flags and the Training module its defaults.

    Args:
        epochs: passes over the training cases, at most: with a time limit the run ends at whichever comes
            first, and the learning rate follows whichever is further along.
        max_minutes: stop cleanly after this many minutes (``None`` or 0: no limit). By default an hour:
            on a few cases 50 epochs ended long before a time limit and learnt far less in it
            (``docs/training.md``), so the clock, not the epochs, sets a run's length.
        lr, weight_decay: AdamW settings; the learning rate follows a cosine schedule to 0.
        batch_size: cases per step; each gives ``samples_per_case`` patches, so a step sees
            ``batch_size * samples_per_case`` patches.
        samples_per_case: patches cropped from each case per epoch (each centred on foreground or not
            with equal odds). 1 learnt most per CPU minute (``Testing/benchmarks/bench_recipe.py``).
        policy: ``"paper"`` or ``"random_subset"``.
        distill: MAG-MS self-distillation (``False``: DiceCE on every output only).
        kl_weight, feature_weight: weights of the distillation terms (see :class:`~magms.losses.MAGMSLoss`).
        seed: seeds the weights, the split, the data order and the augmentation.
        val_fraction: fraction of the cases held out for validation (at least one when > 0).
        val_cases: names of the validation cases (an explicit split; overrides ``val_fraction``).
        val_every: validate every this many epochs (and always after the last one).
        val_share: the validation budget: a due validation is skipped while the time spent validating
            so far exceeds this share of the run's time (the last epoch is always validated). With
            short epochs, validating each one would take most of the run.
        amp: mixed precision on CUDA.
        singles_per_step: single-modality outputs decoded per step (0: all).
        lr_schedule: after the warm-up, ``cosine`` to 0 or ``constant``.
        channels_last: channels-last 3-D memory layout (``torch.channels_last_3d``).
        augmentation: the patch augmentation preset, ``"light"`` or ``"strong"`` (:mod:`magms.data.augment`).
        max_clicks: above 0, click training (:class:`~magms.training.step.ClickTrainStep`): the ``init`` model is
            frozen and a click guidance trained for it with up to this many simulated clicks per patch.
        seg_loss: ``"labels"``: Dice+CE over the labels; ``"regions"``: CE over the labels and Dice over the
            label scheme's regions (:class:`~magms.losses.RegionDiceCELoss`).
    """

    _where: ClassVar[str] = "training config"

    epochs: int = option(1000, "epochs: passes over the training cases, at most (the time limit usually ends a run first)",
                         minimum=1, maximum=100000)
    max_minutes: float | None = option(60.0, "stop cleanly and write the bundle after this many minutes (0: no limit)",
                                       minimum=0, maximum=100000)
    lr: float = option(1e-3, "AdamW learning rate, cosine schedule", minimum=0)
    weight_decay: float = option(1e-5, "AdamW weight decay", minimum=0)
    batch_size: int = option(2, "cases per step", minimum=1)
    samples_per_case: int = option(1, "patches per case and step", minimum=1)
    policy: str = option("paper", "subset policy: {choices}", choices=POLICIES)
    distill: bool = option(True, "no self-distillation: DiceCE on every output only (the baseline)")
    kl_weight: float = option(1.0, "weight of each fused -> modality KL term", minimum=0, maximum=100)
    feature_weight: float = option(1.0, "weight of each fused -> modality feature MSE term", minimum=0, maximum=100)
    seed: int = option(0, "seed of weights, split, order and augmentation")
    val_fraction: float = option(0.2, "fraction of cases held out for validation", minimum=0, maximum=1, exclusive_maximum=True)
    val_cases: tuple[str, ...] = option((), "explicit validation cases by name (overrides --val-fraction)", separator=",",
                                        metavar="NAME,NAME")
    val_every: int = option(1, "validate every N epochs, and after the last", minimum=1)
    val_share: float = option(
        0.1, "largest share of the wall time spent validating: an epoch end that is due skips validation while the "
        "share so far is above it (the last epoch is always validated)", minimum=0, maximum=1,
    )
    amp: bool = option(True, "full precision on CUDA (default: mixed precision)")
    singles_per_step: int = option(
        0, "single-modality outputs decoded per step, drawn from the present modalities (0: all, the paper); "
        "the others are still encoded, fused and their features distilled", minimum=0, maximum=64,
    )
    lr_schedule: str = option("cosine", "learning rate after the warm-up: {choices}", choices=LR_SCHEDULES)
    channels_last: bool = option(False, "channels-last 3-D memory layout of the network and its inputs")
    augmentation: str = option("light", "patch augmentation: {choices} (light: mirroring and intensity jitter; strong: "
                               "also rotation, scaling, noise, blur, gamma, low resolution, thick slices)", choices=AUGMENTATIONS)
    seg_loss: str = option("labels", "segmentation loss: {choices} (labels: Dice+CE over the labels; regions: CE over the labels "
                           "and Dice over the label scheme's scored regions, e.g. BraTS WT, TC, ET)", choices=SEG_LOSSES)
    max_clicks: int = option(
        0, "click training: freeze the --init model and train a click guidance for it, with up to N simulated "
        "correction clicks per patch (0: automatic training)", minimum=0, maximum=20,
    )

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.max_minutes == 0:  # "0: no limit", as the Training module's spin box says it
            object.__setattr__(self, "max_minutes", None)
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be 'paper' or 'random_subset', got {self.policy!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.kl_weight < 0 or self.feature_weight < 0:
            raise ValueError("kl_weight and feature_weight must be >= 0")
        if self.batch_size < 1 or self.samples_per_case < 1:
            raise ValueError("batch_size and samples_per_case must be >= 1")
        if self.singles_per_step < 0:
            raise ValueError(f"singles_per_step must be >= 0, got {self.singles_per_step}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.augmentation not in AUGMENTATIONS:
            raise ValueError(f"augmentation must be one of {', '.join(AUGMENTATIONS)}, got {self.augmentation!r}")
        if self.seg_loss not in SEG_LOSSES:
            raise ValueError(f"seg_loss must be one of {', '.join(SEG_LOSSES)}, got {self.seg_loss!r}")
