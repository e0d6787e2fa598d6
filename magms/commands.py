"""What each ``magms`` command takes: one record per command, the single source of its options.

The CLI generates its flags from these records (:func:`magms.options.add_arguments`), a run can be
written as a JSON file of them (``--config``), and the Slicer modules fill and save them. Fields
that the core records also have (``epochs`` of :class:`~magms.config.TrainConfig`) are copied
from there with :func:`~magms.fields.same_as`, so a default is written once.

Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from magms.config import BACKBONES, NetConfig, PreprocessConfig, TrainConfig, as_tuple3
from magms.errors import ConfigError
from magms.fields import option, same_as
from magms.labels import SCHEMES
from magms.options import Options, read_config
from magms.protocol import ENGINES, PRECISIONS, PREPROCESS_MODES, RUN_OPTIONS_FILE, TARGET_PROTOCOLS

__all__ = ["DATA_HELP", "BUILTIN_DEFAULT_HELP", "default_sample_data", "TargetOptions", "target_request", "SegmentOptions",
           "ExportOptions", "EvaluateOptions", "TrainOptions", "DemoOptions", "ServeOptions", "DevicesOptions"]

DATA_HELP = (
    "the cases: an MSD task folder (dataset.json with 'modality', 4-D imagesTr/, labelsTr/), an nnU-Net v2 raw "
    "data set (dataset.json with 'channel_names', imagesTr/<case>_0000.nii.gz, labelsTr/), a folder of case folders "
    "(modalities guessed from file names, label file named seg, label, OTMultiClass...), or a CSV manifest "
    "case,<slot>,...,label (paths relative to the CSV, an empty cell = modality missing)"
)
# The default of Resources/Models/models.json, written here for --help (read without touching the
# files); Testing/test_builtin.py checks that the two agree.
BUILTIN_DEFAULT_HELP = "the built-in model brats-glioma-4seq, in Resources/Models"
PROGRESS_STYLES = ("bar", "lines", "none")
OUTPUT_FORMATS = (".seg.nrrd", ".nii.gz", ".nrrd", ".mha")
#: ``magms segment --compare``: the outputs the review compares with the fullest one (:mod:`magms.review`).
COMPARE_MODES = ("none", "subsets", "flips")


def default_sample_data() -> Path:
    """``$MAGMS_TEST_DATA``, else ``../shared/data`` (the sample data beside a checkout)."""
    return Path(os.environ.get("MAGMS_TEST_DATA", Path("..") / "shared" / "data"))


def _schemes() -> tuple[str, ...]:
    return tuple(SCHEMES)


@dataclasses.dataclass(frozen=True)
class InferenceOptions(Options):
    """Where and how the network runs: shared by the commands that segment."""

    device: str = option("auto", "auto (CUDA when present), cpu, cuda or cuda:N")
    sw_batch_size: int = option(2, "sliding windows per network run (OpenVINO makes two runs at once)", minimum=1)
    amp: bool = option(True, "full precision on CUDA (default: mixed precision); the same as --precision fp32 for the eager engine")
    postprocess: bool = option(True, "the network's labels as they are: none of the bundle's size rules or flip test-time augmentation")
    tta: bool = option(False, "flip test-time augmentation over all three axes (8 network runs per window), whatever the bundle records")
    engine: str = option(
        "auto", "what runs the network: eager PyTorch (the reference), or its graphs exported once per model to OpenVINO or "
        "ONNX Runtime on the CPU (pip install 'magms-slicer[fast]'); auto: OpenVINO when installed and the device is the CPU, "
        "else eager", choices=ENGINES,
    )
    precision: str = option(
        "auto", "the network's arithmetic on every engine: fp32 (the reference: float32, also eager on CUDA), or auto (the "
        "engine's choice: mixed precision for eager on CUDA, bfloat16 in OpenVINO on CPUs with bf16 instructions, float32 "
        "elsewhere and in ONNX Runtime; measured Dice unchanged)", choices=PRECISIONS,
    )


@dataclasses.dataclass(frozen=True)
class TargetOptions:
    """Radiotherapy targets grown from the segmentation (:mod:`magms.targets`): the options ``segment`` and ``export``
    share (each copies them with :func:`~magms.fields.same_as`, after its own), and the request they make."""

    targets: str | None = option(
        None, "also grow radiotherapy targets (GTV, CTV, PTV, and the brain) by this protocol: {choices} (docs/targets.md); "
        "they go into --rtstruct/--dicom-seg with TG-263 names and RT types, and into --targets-dir", choices=TARGET_PROTOCOLS,
    )
    margin: tuple[str, ...] = option(
        (), "with --targets: a CTV or PTV margin in mm by target name, e.g. CTV=12 or PTV=5 (repeatable; default: the protocol's)",
        repeat=True, metavar="TARGET=MM",
    )
    brain_mask: Path | None = option(
        None, "with --targets: the brain mask a CTV keeps to (any grid); default: the mask --preprocess extracted, or the "
        "inputs' brain when they are skull-stripped"
    )
    barrier: Path | None = option(None, "with --targets: a mask of anatomical barriers (falx, tentorium) a CTV does not cross")
    targets_dir: Path | None = option(
        None, "with --targets: also write each target and the brain as a 0/1 mask <NAME>.nii.gz on the DICOM objects' grid, "
        "with targets.json (protocol, margins, volumes), into this folder (made if missing)"
    )
    planning_ct: Path | None = option(
        None, "the planning CT's DICOM series folder: the MR registered to it (rigid, mutual information, checked), and "
        "--rtstruct/--dicom-seg (and the targets) drawn on the CT, referencing its series and frame of reference; the "
        "registration's picture written beside the first DICOM object (<name>.registration.png)"
    )



def target_request(options: Any) -> Any:
    """The :class:`magms.targets.TargetRequest` that ``options`` (with the fields of :class:`TargetOptions`) ask for,
    or None; every target option checked."""
    given = [flag for flag, value in (("--margin", options.margin), ("--brain-mask", options.brain_mask),
                                      ("--barrier", options.barrier), ("--targets-dir", options.targets_dir)) if value]
    if options.targets is None:
        if given:
            raise ConfigError(f"{', '.join(given)} without --targets: name a protocol ({', '.join(TARGET_PROTOCOLS)})")
        return None
    from magms.targets import TargetRequest, get_protocol, parse_margins

    for flag, path in (("--brain-mask", options.brain_mask), ("--barrier", options.barrier)):
        if path is not None and not path.exists():
            raise ConfigError(f"{flag} {path}: no such file")
    protocol = get_protocol(options.targets).with_margins(parse_margins(options.margin))
    return TargetRequest(protocol, options.brain_mask, options.barrier, options.targets_dir)


@dataclasses.dataclass(frozen=True)
class SegmentOptions(InferenceOptions):
    """``magms segment``: one case from any subset of the model's slots, or many (``batch``)."""

    command = "segment"

    model: Path | None = option(None, f"model bundle folder (model.safetensors + magms.json) (default: {BUILTIN_DEFAULT_HELP})")
    input: tuple[str, ...] = option(
        (), "one modality: slot (or alias, e.g. t2f) = NIfTI/NRRD/MHA file or DICOM series folder; repeat per modality",
        repeat=True, metavar="SLOT=PATH",
    )
    input_dir: Path | None = option(None, "a case folder: slots guessed from the file names, the mapping printed on stderr")
    output: Path | None = option(
        None, "labelmap to write: .seg.nrrd (Slicer segmentation with names, colours, terminology), .nii.gz, .nii, .nrrd or .mha"
    )
    probabilities: Path | None = option(None, "also write the class probabilities (one component per class) to this .nii.gz/.nrrd/.mha")
    compare: str = option(
        "none", "also segment from every smaller non-empty subset of the given inputs (subsets) or from each of the 8 flips "
        "separately (flips), for the disagreement map and the Dice-to-fullest column", choices=COMPARE_MODES,
    )
    disagreement: Path | None = option(
        None, "with --compare: write the disagreement map (per voxel, how many compared outputs have another label than the "
        "fullest output; 0 where all agree) to this .nii.gz/.nrrd/.mha, on the output's grid"
    )
    report: Path | None = option(
        None, "write a one-page review into this folder: report.md (inputs, model and its validation, volumes, Dice to the "
        "fullest output), report.png (overlay, disagreement outlined) and volumes.csv"
    )
    compared_outputs: Path | None = option(
        None, "with --compare: also write every compared output into this folder (made if missing), one <name>.seg.nrrd "
        "each on the output's grid, named as in the report (flair.seg.nrrd, t1c.seg.nrrd; no flip.seg.nrrd, flip LR.seg.nrrd)"
    )
    clicks: Path | None = option(
        None, "correct the segmentation with clicks, in their order: a JSON file {\"frame\": \"RAS\" or \"LPS\", \"clicks\": "
        "[{\"point\": [x, y, z], \"region\": \"wt\", \"positive\": true}, ...]} with points in that physical frame "
        "(RAS: Slicer's; LPS: DICOM's and ITK's); the model must take clicks (docs/refine.md)"
    )
    overwrite: bool = option(False, "replace existing output files (default: refuse)")
    batch: Path | None = option(
        None, "many cases: a CSV manifest (case,<slot>,...) or a folder of case folders; goes on past a bad case and "
        "lists the failures at the end"
    )
    output_dir: Path | None = option(None, "with --batch: folder for the outputs, named <case><format>")
    format: str = option(".seg.nrrd", "with --batch: output format", choices=OUTPUT_FORMATS)
    rtstruct: Path | None = option(
        None, "also write a DICOM RT Structure Set (.dcm) referencing the reference input, which must be a DICOM series "
        "folder: one ROI per label and region; with --batch a folder, one <case>.rtstruct.dcm per case"
    )
    dicom_seg: Path | None = option(
        None, "also write a DICOM Segmentation (.dcm) referencing the reference input's DICOM series, with the labels' "
        "SNOMED CT codes; with --batch a folder, one <case>.seg.dcm per case"
    )
    preprocess: str = option(
        "none", "raw clinical images: register each sequence rigidly to the reference (register), extract the brain with "
        "deepbet (strip), both (full), or what the inputs need (auto: register the sequences on another grid or DICOM frame "
        "of reference, extract the brain when an input is not skull-stripped); none does neither. The output stays on "
        "the reference input's grid", choices=PREPROCESS_MODES,
    )
    targets: str | None = same_as(TargetOptions, "targets")
    margin: tuple[str, ...] = same_as(TargetOptions, "margin")
    brain_mask: Path | None = same_as(TargetOptions, "brain_mask")
    barrier: Path | None = same_as(TargetOptions, "barrier")
    targets_dir: Path | None = same_as(TargetOptions, "targets_dir")
    planning_ct: Path | None = same_as(TargetOptions, "planning_ct")
    progress: str = option("bar", "progress on stderr: a bar, 'progress DONE/TOTAL' lines, or none", choices=PROGRESS_STYLES)


@dataclasses.dataclass(frozen=True)
class ExportOptions(Options):
    """``magms export``: a label map on a DICOM series' grid as DICOM RT Structure Set and Segmentation."""

    command = "export"

    labels: Path = option(help="label map on the series' grid (.seg.nrrd, .nii.gz, .nrrd, .mha), in the model's label values")
    series: tuple[Path, ...] = option(
        (), "the DICOM series the labels were made on: its folder, or its files (repeatable)", repeat=True, metavar="PATH"
    )
    model: Path | None = option(None, f"the model bundle whose labels these are (default: {BUILTIN_DEFAULT_HELP})")
    rtstruct: Path | None = option(None, "write a DICOM RT Structure Set (.dcm): one ROI per label and region")
    dicom_seg: Path | None = option(None, "write a DICOM Segmentation (.dcm) with the labels' SNOMED CT codes")
    overwrite: bool = option(False, "replace existing files")
    targets: str | None = same_as(TargetOptions, "targets")
    margin: tuple[str, ...] = same_as(TargetOptions, "margin")
    brain_mask: Path | None = same_as(TargetOptions, "brain_mask")
    barrier: Path | None = same_as(TargetOptions, "barrier")
    targets_dir: Path | None = same_as(TargetOptions, "targets_dir")
    planning_ct: Path | None = same_as(TargetOptions, "planning_ct")
    targets_from: Path | None = option(
        None, "structures drawn already (targets, the brain): a targets.json as --targets-dir writes it, or as the MAGMS "
        "Segmenter writes for its target segments; their masks (any grid) go into the DICOM objects after the labels"
    )


@dataclasses.dataclass(frozen=True)
class EvaluateOptions(InferenceOptions):
    """``magms evaluate``: Dice and HD95 for every subset on labelled cases."""

    command = "evaluate"

    model: Path | None = option(None, f"model bundle folder (default: {BUILTIN_DEFAULT_HELP})")
    data: Path = option(help=DATA_HELP)
    out: Path = option(help="folder for metrics.csv, summary.md and heatmap.png")
    labels: str | None = option(
        None, "label scheme of the data's label files if it differs from the model's ({choices}); mapped to the model's scheme",
        choices=_schemes,
    )
    subset: tuple[str, ...] = option(
        (), "only these subsets (repeatable), e.g. --subset flair --subset flair,t1c (default: every subset)",
        repeat=True, metavar="SLOT,SLOT",
    )
    overwrite: bool = option(False, "replace existing report files")
    progress: str = option("lines", "a line per case and subset on stderr", choices=("lines", "none"))


@dataclasses.dataclass(frozen=True)
class TrainOptions(Options):
    """``magms train``: the data, the model's shape, the training loop and where it all goes."""

    command = "train"

    data: Path = option(help=DATA_HELP)
    labels: str = option(help="label scheme of the label files: {choices}", choices=_schemes)
    out: Path = option(help="output folder: checkpoint, metrics.csv, then the bundle")
    slots: tuple[str, ...] = option((), "comma-separated modality slots of the model (default: every slot the data has)",
                                    separator=",", metavar="SLOT,SLOT")
    backbone: str = option(NetConfig.backbone, "light U-Net (unet) or UNETR (unetr)", choices=BACKBONES)
    channels: tuple[int, ...] = option((), "U-Net widths, e.g. 16,32,64,128 (default)", separator=",", metavar="A,B,C,D")
    checkpointing: bool = option(False, "activation checkpointing: less memory, slower")
    spacing: float = option(2.0, "working spacing in mm, 0 keeps each case's", minimum=0)
    patch: tuple[int, ...] = option((48,), "patch size in working voxels: one or three numbers", minimum=8, maximum=256, metavar="N")
    overlap: float = option(PreprocessConfig.overlap, "sliding-window overlap for validation and later inference",
                            minimum=0, maximum=1, exclusive_maximum=True)
    epochs: int = same_as(TrainConfig, "epochs")
    max_minutes: float | None = same_as(TrainConfig, "max_minutes")
    lr: float = same_as(TrainConfig, "lr")
    weight_decay: float = same_as(TrainConfig, "weight_decay")
    batch_size: int = same_as(TrainConfig, "batch_size")
    samples_per_case: int = same_as(TrainConfig, "samples_per_case")
    policy: str = same_as(TrainConfig, "policy")
    distill: bool = same_as(TrainConfig, "distill")
    kl_weight: float = same_as(TrainConfig, "kl_weight")
    feature_weight: float = same_as(TrainConfig, "feature_weight")
    seed: int = same_as(TrainConfig, "seed")
    val_fraction: float = same_as(TrainConfig, "val_fraction")
    val_cases: tuple[str, ...] = same_as(TrainConfig, "val_cases")
    val_every: int = same_as(TrainConfig, "val_every")
    val_share: float = same_as(TrainConfig, "val_share")
    amp: bool = same_as(TrainConfig, "amp", help="full precision on CUDA")
    singles_per_step: int = same_as(TrainConfig, "singles_per_step")
    lr_schedule: str = same_as(TrainConfig, "lr_schedule")
    channels_last: bool = same_as(TrainConfig, "channels_last")
    augmentation: str = same_as(TrainConfig, "augmentation")
    seg_loss: str = same_as(TrainConfig, "seg_loss")
    max_clicks: int = same_as(TrainConfig, "max_clicks")
    preprocess: str = option(
        "none", "raw training images: register, strip, full or auto as for magms segment, once per case into OUT.preprocessed/ beside OUT "
        "(reused by --resume); the label stays with the reference input", choices=PREPROCESS_MODES,
    )
    check_only: bool = option(False, "check every case as training would, report every problem, then stop (nothing is written)")
    resume: bool = option(False, "continue the run in --out from its checkpoint, with the options of its last sitting "
                                 f"({RUN_OPTIONS_FILE} in --out) but those given again")
    init: Path | None = option(None, "start from this bundle's weights (fine-tuning; same architecture)")
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    progress: str = option("bar", "progress on stderr", choices=PROGRESS_STYLES)

    def __post_init__(self) -> None:
        try:  # the training record's own checks first: its messages name the rule
            self.train_config()
        except ValueError as err:
            raise ConfigError(str(err)) from err
        super().__post_init__()
        if len(self.patch) not in (1, 3):
            raise ConfigError(f"patch must be one number or three, got {' '.join(map(str, self.patch))}")

    @classmethod
    def recorded(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """With ``resume``: the options of the last sitting of the run in ``out`` (``RUN_OPTIONS_FILE``), but for
        those that describe a sitting rather than the run (device, progress, check_only), and any a later version dropped.

        Raises:
            ConfigError: the record exists but cannot be read, or holds a value this version refuses (named).
        """
        out = values.get("out")
        if not values.get("resume") or not isinstance(out, (str, os.PathLike)):
            return {}
        file = Path(out) / RUN_OPTIONS_FILE
        if not file.is_file():  # a run started before the record, or through the Python API
            return {}
        known = {f.name for f in dataclasses.fields(cls)} - {"resume", "check_only", "device", "progress"}
        record = {k: v for k, v in read_config(file).items() if k in known}
        cls.from_dict(record, where=str(file))  # a bad value is named in the file it comes from
        return record

    def train_config(self) -> TrainConfig:
        """The training loop's record (stored in the bundle)."""
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        return TrainConfig(**{n: getattr(self, n) for n in names})

    def preprocessing(self) -> PreprocessConfig:
        """Working grid and patch of the run (stored in the bundle)."""
        return PreprocessConfig(
            spacing=None if self.spacing <= 0 else (self.spacing,) * 3,
            patch_size=as_tuple3(self.patch[0] if len(self.patch) == 1 else self.patch),
            overlap=self.overlap,
        )

    def net_overrides(self) -> dict[str, Any]:
        """The :class:`~magms.config.NetConfig` fields this run sets (the rest keep their defaults)."""
        overrides: dict[str, Any] = {"backbone": self.backbone, "checkpointing": self.checkpointing}
        if self.backbone == "unet" and self.channels:
            overrides["channels"] = self.channels
        return overrides


@dataclasses.dataclass(frozen=True)
class DemoOptions(Options):
    """``magms demo``: the main job on the real sample data."""

    command = "demo"

    data: Path = option(
        default_sample_data(),
        "the sample-data folder with brats_unlabelled/, brats18/ and brats_flair_t1c/ (default: $MAGMS_TEST_DATA or ../shared/data)",
    )
    out: Path = option(Path("demo_output"), "output folder: OUT/<case>/<subset>.seg.nrrd and .png, OUT/evaluation/")
    model: Path | None = option(None, "model bundle folder (default: the built-in model)")
    train: bool = option(False, "train a light FLAIR + T1c model first on the BraTS 2013 sample cases "
                                "(OUT/model, reused when there) and use it")
    minutes: float = option(6.0, "with --train: training time limit in minutes", minimum=0)
    spacing: float = option(2.0, "with --train: working spacing in mm", minimum=0)
    patch: int = option(48, "with --train: training patch edge in voxels", minimum=1)
    channels: tuple[int, ...] = option((16, 32, 64, 128), "with --train: U-Net widths", separator=",", metavar="A,B,C,D")
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    engine: str = same_as(InferenceOptions, "engine")
    precision: str = same_as(InferenceOptions, "precision")
    progress: str = option("bar", "with --train: training progress on stderr", choices=PROGRESS_STYLES)


@dataclasses.dataclass(frozen=True)
class ServeOptions(Options):
    """``magms serve``: the refinement worker, one JSON request per line on stdin, one reply per line on stdout."""

    command = "serve"

    model: Path | None = option(None, f"model bundle folder whose network takes clicks (default: {BUILTIN_DEFAULT_HELP})")
    device: str = option("cpu", "auto, cpu, cuda or cuda:N (the clicks' windows are small: the CPU answers within a second)")
    engine: str = same_as(InferenceOptions, "engine")
    preprocess: str = same_as(SegmentOptions, "preprocess")


@dataclasses.dataclass(frozen=True)
class DevicesOptions(Options):
    """``magms devices``: what this Python can run on, and the versions it would run with."""

    command = "devices"

    output: Path | None = option(None, "write the JSON to this file (default: stdout)")
