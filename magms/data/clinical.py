"""Raw clinical images in: co-registration and brain extraction before segmentation (``--preprocess``).

MAGMS models are trained on skull-stripped sequences that share one frame of reference (BraTS).
Clinical series come with the skull, each on its own grid, sometimes with the head moved between
them. :func:`preprocess_inputs` does what :func:`~magms.data.inputs.prepare_inputs` does (read,
check, bring every input onto the reference input's grid) and, as the mode asks:

* **Co-registration** (:func:`register_rigid`): each non-reference sequence is registered rigidly
  (``Euler3DTransform``) to the reference, the first present slot in the model's order, with Mattes
  mutual information, three resolutions (shrink 4, 2, 1 with Gaussian smoothing 2, 1, 0 mm), from
  the better of two starts: the headers as they are, or the centres of mass matched. The result is
  checked: the optimiser must converge, the images must share information (mutual information at
  least :data:`MIN_MUTUAL_INFORMATION`), the end must be no worse than the start, and the motion
  plausible (at most :data:`MAX_ROTATION_DEGREES` and :data:`MAX_SHIFT_MM`); a failure is an
  :class:`~magms.errors.ImageError` naming the slot and file. The sequence is then resampled onto the
  reference grid (linear) through the transform, and a note reports rotation, translation and metric.
* **Brain extraction** (:func:`extract_brain`): one brain mask, from deepbet (Fisch et al., Comput.
  Biol. Med. 2024; an optional package) run on the best sequence for it (T1, else T1c, else PD,
  T2, FLAIR, in that order) on a 1 mm grid, or, in ``auto`` mode, from an input that is skull-stripped
  already; every sequence is set to 0 outside it.
* **Detection** (:func:`skull_check`, its numeric core in :mod:`magms.data.skull`): whether an image is skull-stripped, from two numbers:
  the share of its voxels that hold exactly its minimum (a stripped image has its background set to
  one value; a head scan's air is noise), and the volume of the rest (a brain is at most about
  2 litres, a head with its skull and scalp much more).

The reference input is never moved or resampled: every output stays on the grid the user loaded.

Modes (:data:`PREPROCESS_MODES`): ``none`` (as before, with a note when an input looks unstripped),
``auto`` (register the sequences whose headers differ from the reference's, extract the brain when
an input is not stripped), ``register`` (register every sequence), ``strip`` (extract the brain),
``full`` (both).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from magms.data.inputs import PreparedInputs, onto_reference, read_inputs
from magms.data.io import same_grid
from magms.data.skull import STRIPPED_FILL_FRACTION, STRIPPED_MAX_ML, SkullCheck, skull_check_array
from magms.errors import ConfigError, ImageError
from magms.protocol import MIN_OVERLAP, PREPROCESS_MODES

__all__ = [
    "PREPROCESS_MODES",
    "BRAIN_EXTRA",
    "MIN_MUTUAL_INFORMATION",
    "MAX_ROTATION_DEGREES",
    "MAX_SHIFT_MM",
    "STRIPPED_FILL_FRACTION",
    "STRIPPED_MAX_ML",
    "SkullCheck",
    "skull_check",
    "Registration",
    "register_rigid",
    "BrainExtractor",
    "load_brain_extractor",
    "extract_brain",
    "PreprocessedInputs",
    "preprocess_inputs",
    "preprocess_cases",
]

logger = logging.getLogger(__name__)

#: How to install the optional brain extraction.
BRAIN_EXTRA = "pip install 'magms-slicer[brain]' (or: pip install deepbet)"

# --------------------------------------------------------------------------------------------
# detection (the numeric core: magms.data.skull)


def skull_check(image: sitk.Image) -> SkullCheck:
    """Tell whether ``image`` is skull-stripped (:func:`magms.data.skull.skull_check_array` on its voxels).

    A stripped image is the brain with everything else set to one value: many voxels hold exactly
    the image's minimum (at least 30 %: a brain fills about half of its bounding box), and the other
    voxels are a brain's volume (at most 2.3 l). A head scan's air holds noise, so few voxels share
    one exact value; where a scanner sets the air to 0, the rest is a head, above 3 l when the
    whole head is covered. Measured on real images (``Testing/benchmarks/bench_skull_detection.py``):
    66 stripped BraTS images 58-88 % fill and 1.1-1.7 l; the whole-head MNI templates 0.01-0.07 %
    (7.2 l); the same with the air set to exactly 0, 33-44 % but 4.1-4.8 l. A head scan whose air is
    stored as zeros and that covers less than about half of the head can pass for stripped: force
    ``--preprocess strip`` then.
    """
    return skull_check_array(sitk.GetArrayViewFromImage(image), image.GetSpacing())


# --------------------------------------------------------------------------------------------
# registration

#: Mutual information (nats) below which two images share nothing: noise against a brain gives
#: about 0.001, a real pair of sequences 0.3 and more (FLAIR against T1c 0.7, T1 against T2 1.0).
MIN_MUTUAL_INFORMATION = 0.05
#: The largest head motion between two series of one session that a registration may find.
MAX_ROTATION_DEGREES = 30.0
MAX_SHIFT_MM = 50.0
_BINS = 50
_SEED = 20240601  # the metric samples voxels at random: a fixed seed makes every run the same
_SHRINK = (4, 2, 1)
_SMOOTH_MM = (2.0, 1.0, 0.0)
_SAMPLING = (0.25, 0.10, 0.03)  # share of the voxels sampled at each level: ~50k points each on a brain
_ITERATIONS = 100  # per level; reaching it at the last level means the optimiser did not converge


@dataclasses.dataclass(frozen=True)
class Registration:
    """A rigid registration of one sequence to the reference.

    Attributes:
        slot: the sequence's slot.
        transform: maps the reference's world points (mm) to the sequence's, about ``transform.GetCenter()``
            (the reference's centre of mass).
        rotation_deg: rotation about x, y, z (degrees, ITK's Euler angles).
        angle_deg: the whole rotation's angle.
        translation_mm: translation of the centre (mm).
        mi_start, mi_final: Mattes mutual information (nats, higher is better) at the start and end,
            on the same voxel samples of the full-resolution images.
        iterations: optimiser iterations at the last level.
        seconds: wall time.
    """

    slot: str
    transform: sitk.Euler3DTransform
    rotation_deg: tuple[float, float, float]
    angle_deg: float
    translation_mm: tuple[float, float, float]
    mi_start: float
    mi_final: float
    iterations: int
    seconds: float

    @property
    def shift_mm(self) -> float:
        return float(np.linalg.norm(self.translation_mm))

    def describe(self) -> str:
        rx, ry, rz = self.rotation_deg
        tx, ty, tz = self.translation_mm
        return (
            f"rotation {self.angle_deg:.1f} degrees (x {rx:.1f}, y {ry:.1f}, z {rz:.1f}), translation {self.shift_mm:.1f} mm "
            f"(x {tx:.1f}, y {ty:.1f}, z {tz:.1f}); mutual information {self.mi_start:.3f} -> {self.mi_final:.3f}; "
            f"{self.iterations} iterations, {self.seconds:.1f} s"
        )


def _metric(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform, sampling: float = 0.05) -> float:
    """Mattes mutual information (nats) of the pair under ``transform``, on fixed samples."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(_BINS)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(sampling, _SEED)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetInitialTransform(transform)
    try:
        return -float(method.MetricEvaluate(fixed, moving))
    except RuntimeError:  # too few samples inside both images: nothing shared
        return 0.0


def _angle(transform: sitk.Euler3DTransform) -> float:
    matrix = np.asarray(transform.GetMatrix()).reshape(3, 3)
    return math.degrees(math.acos(float(np.clip((np.trace(matrix) - 1) / 2, -1.0, 1.0))))


def _registration_method(initial: sitk.Transform) -> sitk.ImageRegistrationMethod:
    """Mattes mutual information, a multi-resolution regular-step gradient descent, from ``initial``."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(_BINS)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(_SAMPLING[-1], _SEED)
    method.SetMetricSamplingPercentagePerLevel(list(_SAMPLING), _SEED)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-3, numberOfIterations=_ITERATIONS, relaxationFactor=0.5, gradientMagnitudeTolerance=1e-6,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(_SHRINK))
    method.SetSmoothingSigmasPerLevel(list(_SMOOTH_MM))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(sitk.Euler3DTransform(initial), inPlace=False)
    return method


def _registration_problem(result: Registration, stop: str, limits: tuple[float, float] | None) -> str | None:
    """Why a finished registration is not to be trusted (None: it is): no convergence, no shared information,
    a worse alignment than at the start, or (with ``limits``: degrees, mm) an implausible motion within one session."""
    if "Maximum number of iterations" in stop:
        return f"the optimiser did not converge in {_ITERATIONS} iterations"
    if result.mi_final < MIN_MUTUAL_INFORMATION:
        return f"the images share no information after it (mutual information {result.mi_final:.3f} nats)"
    if result.mi_final < result.mi_start - 0.01 * abs(result.mi_start):
        return f"it made the alignment worse (mutual information {result.mi_start:.3f} -> {result.mi_final:.3f} nats)"
    if limits is not None and (result.angle_deg > limits[0] or result.shift_mm > limits[1]):
        return (f"it found an implausible motion between two series of one session ({result.angle_deg:.0f} degrees, "
                f"{result.shift_mm:.0f} mm; at most {limits[0]:.0f} degrees and {limits[1]:.0f} mm)")
    return None


def register_rigid(fixed: sitk.Image, moving: sitk.Image, slot: str = "moving", name: str = "image",
                   reference: str = "reference", within_session: bool = True) -> Registration:
    """Register ``moving`` rigidly to ``fixed`` (see the module docstring for the method and checks).

    Args:
        fixed: the reference image.
        moving: the sequence to align, on its own grid.
        slot, name, reference: the moving image's slot and file name and the reference's, for messages.
        within_session: the two images come from one session, so a rotation above :data:`MAX_ROTATION_DEGREES` or a
            shift above :data:`MAX_SHIFT_MM` is refused; False: no such limit (two scanners, e.g. an MR and the planning
            CT, :mod:`magms.planning`).
    Returns:
        The registration; :attr:`Registration.transform` maps ``fixed``'s points to ``moving``'s.
    Raises:
        ImageError: the images share no information, the optimiser did not converge, the end is
            worse than the start, or the motion is implausible; naming ``slot`` and ``name``.
    """
    start_time = time.perf_counter()
    fixed = sitk.Cast(fixed, sitk.sitkFloat32)
    moving = sitk.Cast(moving, sitk.sitkFloat32)
    who = f"{slot} ({name})"
    moments = sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS)
    headers = sitk.Euler3DTransform()
    headers.SetCenter(moments.GetCenter())  # rotate about the reference's centre of mass, trusting the headers' placement
    starts = [(headers, _metric(fixed, moving, headers)), (sitk.Euler3DTransform(moments), _metric(fixed, moving, moments))]
    initial, mi_start = max(starts, key=lambda s: s[1])
    if mi_start < MIN_MUTUAL_INFORMATION:
        raise ImageError(
            f"{who}: cannot be registered to the reference {reference}: the images share no information "
            f"(mutual information {mi_start:.3f} nats, below {MIN_MUTUAL_INFORMATION}): a constant image, noise, or another scan?"
        )
    method = _registration_method(initial)
    try:
        found = method.Execute(fixed, moving)
    except RuntimeError as err:
        raise ImageError(f"{who}: registration to the reference {reference} failed ({str(err).strip().splitlines()[-1]})") from err
    if isinstance(found, sitk.CompositeTransform):
        found = found.GetNthTransform(0)
    transform = sitk.Euler3DTransform(found)
    stop = method.GetOptimizerStopConditionDescription()
    iterations = method.GetOptimizerIteration()
    mi_final = _metric(fixed, moving, transform)
    rotation = tuple(math.degrees(a) for a in (transform.GetAngleX(), transform.GetAngleY(), transform.GetAngleZ()))
    result = Registration(slot, transform, rotation, _angle(transform), tuple(transform.GetTranslation()), mi_start, mi_final,
                          iterations, time.perf_counter() - start_time)
    problem = _registration_problem(result, stop, (MAX_ROTATION_DEGREES, MAX_SHIFT_MM) if within_session else None)
    if problem is not None:
        raise ImageError(f"{who}: registration to the reference {reference} failed: {problem}; is it the same patient and session?")
    logger.info("%s registered to %s: %s", who, reference, result.describe())
    return result


# --------------------------------------------------------------------------------------------
# brain extraction

#: A brain extractor: an image -> its brain mask (uint8, 1 = brain) on any grid covering it.
BrainExtractor = Callable[[sitk.Image], sitk.Image]
#: The order in which sequences are preferred for brain extraction: deepbet is trained on T1-weighted
#: images; on the MNI templates it gives Dice 0.97 (T1), 0.97 (PD) and 0.95 (T2) to their brain mask.
EXTRACTION_ORDER = ("t1", "t1c", "pd", "t2", "flair")
#: A brain mask outside this range (ml) is not a brain.
_BRAIN_ML = (300.0, 3000.0)


@functools.lru_cache(maxsize=1)
def _deepbet_model():
    import warnings

    from deepbet.bet import BrainExtraction

    with warnings.catch_warnings():  # deepbet's TorchScript loading: torch's deprecation notice is not the user's concern
        warnings.simplefilter("ignore", DeprecationWarning)
        return BrainExtraction(no_gpu=True)  # ~4 s per image on one CPU core; keeps the GPU for the network


def load_brain_extractor(name: str = "deepbet") -> BrainExtractor:
    """The brain extractor ``name`` (``deepbet``), or a clear refusal when it is not installed.

    deepbet runs on the CPU on a 1 mm grid in RAS orientation, as it was trained: its TorchScript
    weights ship inside its wheel, nothing is downloaded.

    Raises:
        ConfigError: an unknown extractor, or deepbet not installed (the message gives the install command).
    """
    if name != "deepbet":
        raise ConfigError(f"unknown brain extractor {name!r} (known: deepbet)")
    try:
        importlib.import_module("deepbet")
        importlib.import_module("deepbet.bet")
    except ImportError as err:
        raise ConfigError(f"brain extraction needs the optional package deepbet, which is not installed ({err}): {BRAIN_EXTRA}") from None
    return _deepbet_extract


def _deepbet_extract(image: sitk.Image) -> sitk.Image:
    import torch

    spacing = np.asarray(image.GetSpacing())
    if not np.allclose(spacing, 1.0, rtol=0.05):  # deepbet's training images are 1 mm isotropic
        size = [max(int(round(n * s)), 1) for n, s in zip(image.GetSize(), spacing)]
        image = sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), (1.0, 1.0, 1.0),
                              image.GetDirection(), 0.0, sitk.sitkFloat32)
    ras = sitk.DICOMOrient(sitk.Cast(image, sitk.sitkFloat32), "RAS")
    x = np.ascontiguousarray(sitk.GetArrayFromImage(ras).transpose(2, 1, 0))  # (R, A, S) as nibabel's canonical
    model = _deepbet_model()
    with torch.inference_mode():
        probability = model.run_model(x)
    mask = model.postprocess(probability > 0.5)  # largest component, holes filled
    out = sitk.GetImageFromArray(np.ascontiguousarray(mask.transpose(2, 1, 0)).astype(np.uint8))
    out.CopyInformation(ras)
    return out


def extract_brain(image: sitk.Image, reference: sitk.Image, extractor: BrainExtractor, transform: sitk.Transform | None = None,
                  who: str = "image") -> tuple[sitk.Image, float]:
    """The brain mask of ``image``, on ``reference``'s grid.

    Args:
        image: the sequence to extract the brain from, on its own grid.
        reference: the grid of the mask.
        extractor: see :func:`load_brain_extractor`.
        transform: maps ``reference``'s points to ``image``'s (a registration; None: the headers).
        who: slot and file, for messages.
    Returns:
        The mask (uint8, 1 = brain) and its volume in ml.
    Raises:
        ImageError: the mask is not brain-sized (an image that is not a head MRI).
    """
    mask = extractor(image)
    volume_ml = float(sitk.GetArrayViewFromImage(mask).astype(bool).sum()) * float(np.prod(mask.GetSpacing())) / 1000.0
    if not _BRAIN_ML[0] <= volume_ml <= _BRAIN_ML[1]:
        raise ImageError(f"{who}: brain extraction found {volume_ml:.0f} ml of brain, "
                         f"not {_BRAIN_ML[0]:.0f}-{_BRAIN_ML[1]:.0f} ml: is it a head MRI?")
    # the mask's edge interpolated, then cut at half: no staircase of the coarser grid
    soft = sitk.Resample(sitk.Cast(mask, sitk.sitkFloat32), reference, transform or sitk.Transform(), sitk.sitkLinear, 0.0,
                         sitk.sitkFloat32)
    on_reference = sitk.Cast(sitk.BinaryThreshold(soft, 0.5, 1e9, 1, 0), sitk.sitkUInt8)
    return on_reference, volume_ml


def _apply_mask(image: sitk.Image, mask: sitk.Image) -> sitk.Image:
    array = sitk.GetArrayFromImage(image)
    fill = min(float(array.min()), 0.0)  # the foreground rule reads the minimum as the background
    array[sitk.GetArrayViewFromImage(mask) == 0] = fill
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    return out


# --------------------------------------------------------------------------------------------
# one case


@dataclasses.dataclass
class PreprocessedInputs(PreparedInputs):
    """:class:`~magms.data.inputs.PreparedInputs` after ``--preprocess``, with what was found and done.

    Attributes:
        mode: the ``--preprocess`` mode.
        skull: slot -> its :class:`SkullCheck` (on the image as read).
        registrations: slot -> its :class:`Registration`, for the sequences registered.
        brain_mask: the brain mask applied to every sequence (reference grid), or None.
        mask_source: how the mask was made (``"deepbet on t1"``, ``"t2 (skull-stripped)"``), or None.
    """

    mode: str = "none"
    skull: dict[str, SkullCheck] = dataclasses.field(default_factory=dict)
    registrations: dict[str, Registration] = dataclasses.field(default_factory=dict)
    brain_mask: sitk.Image | None = None
    mask_source: str | None = None


def frame_of_reference(source: str | os.PathLike[str] | sitk.Image) -> str | None:
    """The DICOM Frame of Reference UID of a DICOM series folder (read from one file's header), else None."""
    if isinstance(source, sitk.Image) or not Path(source).is_dir():
        return None
    try:
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(source))
        if not files:
            return None
        reader = sitk.ImageFileReader()
        reader.SetFileName(files[0])
        reader.ReadImageInformation()
        return reader.GetMetaData("0020|0052").strip() if reader.HasMetaDataKey("0020|0052") else None
    except RuntimeError:
        return None


def _needs_registration(slot: str, images: Mapping[str, sitk.Image], frames: Mapping[str, str | None], reference_slot: str) -> str | None:
    """Why the headers say ``slot`` comes from another acquisition than the reference (None: they agree)."""
    if frames.get(slot) and frames.get(reference_slot) and frames[slot] != frames[reference_slot]:
        return "another DICOM frame of reference"
    if not same_grid(images[reference_slot], images[slot]):
        return "another grid"
    return None


def preprocess_inputs(
    inputs: Mapping[str, str | os.PathLike[str] | sitk.Image],
    slots: Sequence[str],
    mode: str = "auto",
    extractor: BrainExtractor | None = None,
    overlap_min: float = MIN_OVERLAP,
) -> PreprocessedInputs:
    """Read, check, register and skull-strip one case's inputs as ``mode`` asks, on the reference's grid.

    Args:
        inputs: slot -> image path (file or DICOM series folder) or SimpleITK image.
        slots: the model's slots in order; the first present one is the reference.
        mode: one of :data:`PREPROCESS_MODES` (see the module docstring).
        extractor: the brain extractor (default: :func:`load_brain_extractor`, loaded only when needed).
        overlap_min: as for :func:`~magms.data.inputs.prepare_inputs`.
    Returns:
        The inputs on the reference input's original grid, with notes saying what was done.
    Raises:
        ConfigError: an unknown mode; brain extraction needed but deepbet not installed.
        ImageError: what :func:`~magms.data.inputs.prepare_inputs` refuses; a registration that fails
            its checks; a brain mask that is not brain-sized. Each names the slot and file.
    """
    if mode not in PREPROCESS_MODES:
        raise ConfigError(f"preprocess must be one of {', '.join(PREPROCESS_MODES)}, got {mode!r}")
    slots = tuple(slots)
    images, names = read_inputs(inputs, slots)
    reference_slot = next(iter(images))
    skull = {slot: skull_check(image) for slot, image in images.items()}
    register = mode in ("register", "full")
    strip = mode in ("strip", "full") or (mode == "auto" and not all(c.stripped for c in skull.values()))
    if strip and extractor is None and (mode != "auto" or not any(c.stripped for c in skull.values())):
        extractor = load_brain_extractor()  # refused before any long work
    notes: list[str] = []
    registrations: dict[str, Registration] = {}
    frames = {slot: frame_of_reference(inputs[slot]) for slot in images} if mode == "auto" else {}
    for slot in list(images)[1:]:
        why = "asked" if register else _needs_registration(slot, images, frames, reference_slot) if mode == "auto" else None
        if why is None:
            continue
        result = register_rigid(images[reference_slot], images[slot], slot, names[slot], f"{reference_slot} ({names[reference_slot]})")
        registrations[slot] = result
        notes.append(f"{slot}: {names[slot]} registered to {reference_slot} ({why}): {result.describe()}")
    prepared = onto_reference(images, names, overlap_min, {s: r.transform for s, r in registrations.items()})
    notes += prepared.notes
    mask, source = None, None
    if strip:
        mask, source, note = _brain_mask(images, prepared, skull, registrations, names, mode, extractor)
        notes.append(note)
        prepared.images = {slot: _apply_mask(image, mask) for slot, image in prepared.images.items()}
    elif mode == "none":
        notes += [f"{slot}: {names[slot]} looks {check.describe()}; --preprocess auto would extract the brain"
                  for slot, check in skull.items() if not check.stripped]
    for note in notes[len(prepared.notes):]:
        logger.info("%s", note)
    return PreprocessedInputs(prepared.images, reference_slot, notes, dict(names), mode, skull, registrations, mask, source)


def _brain_mask(images, prepared, skull, registrations, names, mode, extractor) -> tuple[sitk.Image, str, str]:
    """The brain mask on the reference grid, how it was made, and a note saying so."""
    reference = prepared.images[prepared.reference_slot]
    unstripped = [f"{s} ({names[s]})" for s, c in skull.items() if not c.stripped]
    stripped = [s for s, c in skull.items() if c.stripped]
    if mode == "auto" and stripped:
        # a stripped sequence already draws the brain: its non-background voxels, on the reference grid
        slot = stripped[0]
        array = sitk.GetArrayViewFromImage(prepared.images[slot])
        mask = sitk.GetImageFromArray((array > array.min()).astype(np.uint8))
        mask.CopyInformation(reference)
        ml = float(sitk.GetArrayViewFromImage(mask).sum()) * float(np.prod(reference.GetSpacing())) / 1000.0
        source = f"{slot} (skull-stripped)"
        return mask, source, f"brain mask from {slot} ({names[slot]}, skull-stripped, {ml:.0f} ml) applied to {', '.join(unstripped)}"
    slot = next((s for s in EXTRACTION_ORDER if s in images), next(iter(images)))
    registration = registrations.get(slot)
    who = f"{slot} ({names[slot]})"
    start = time.perf_counter()
    mask, ml = extract_brain(images[slot], reference, extractor, None if registration is None else registration.transform, who)
    why = "asked" if mode in ("strip", "full") else f"not skull-stripped: {', '.join(unstripped)}"
    note = (f"brain extracted with deepbet from {who} ({ml:.0f} ml, {time.perf_counter() - start:.1f} s; {why}); "
            "every sequence set to 0 outside it")
    return mask, f"deepbet on {slot}", note


# --------------------------------------------------------------------------------------------
# training data

_RECORD = "preprocessed.json"


def preprocess_cases(cases: Sequence, slots: Sequence[str], mode: str, folder: str | os.PathLike[str],
                     extractor: BrainExtractor | None = None, progress: Callable[[int, int, str], None] | None = None) -> list:
    """Preprocess training cases once, into ``folder/<case>/<slot>.nii.gz``, and return the cases that point there.

    A case whose files are there from an earlier run with the same mode and the same sources is
    reused (``magms train --resume``). The label keeps its file: the reference input never moves.

    Args:
        cases: :class:`~magms.data.cases.Case` records.
        slots: the model's slots in order.
        mode: one of :data:`PREPROCESS_MODES`; ``none`` returns ``cases`` as they are.
        folder: where the preprocessed images go.
        extractor: the brain extractor (default: deepbet, loaded when a case needs it).
        progress: called with (cases done, cases in all, case name).
    Raises:
        ImageError: every case that fails, one line each, at once.
    """
    if mode == "none":
        return list(cases)
    root = Path(folder)
    out, problems = [], []
    for i, case in enumerate(cases):
        images = {s: p for s, p in case.images.items() if s in slots}
        target = root / case.name
        record = {"mode": mode, "sources": {s: str(Path(p).resolve()) for s, p in images.items()},
                  "mtimes": {s: _mtime(p) for s, p in images.items()}}
        files = {s: target / f"{s}.nii.gz" for s in images}
        record_file = target / _RECORD
        try:
            if not (record_file.is_file() and json.loads(record_file.read_text(encoding="utf-8")) == record
                    and all(f.is_file() for f in files.values())):
                done = preprocess_inputs(images, slots, mode, extractor)
                target.mkdir(parents=True, exist_ok=True)
                for slot, image in done.images.items():
                    sitk.WriteImage(image, str(files[slot]), True)
                record_file.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
                for note in done.notes:
                    logger.info("%s: %s", case.name, note)
            out.append(dataclasses.replace(case, images={**case.images, **files}))
        except (ImageError, ConfigError) as err:
            if isinstance(err, ConfigError):
                raise
            problems.append(f"{case.name}: {err}")
        if progress is not None:
            progress(i + 1, len(cases), case.name)
    if problems:
        raise ImageError(f"{len(problems)} case(s) failed --preprocess {mode}:\n  " + "\n  ".join(problems))
    return out


def _mtime(path: str | os.PathLike[str]) -> float:
    try:
        return Path(str(path).split("#")[0]).stat().st_mtime
    except OSError:
        return 0.0
