"""Imaging modalities: the one place that knows their keys, names and aliases.

A model bundle lists its input *slots* by key in channel order (``("flair", "t1c")``). Files and
DICOM series come with many spellings of the same contrast: BraTS 2013 ``Flair_*``/``T1c_*``,
BraTS 2021+ ``*-t2f``/``*-t1n``/``*-t1c``/``*-t2w``, MSD ``FLAIR``/``T1w``/``T1gd``/``T2w``,
series descriptions such as ``AX T2 FLAIR`` or ``T1 POST GAD``. :func:`guess_slot` turns such a
name into a slot key, or refuses and says why; :func:`canonical_slot` accepts only exact keys or
aliases, for configuration files and command lines where guessing would hide a typo.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TypeVar

from magms.errors import ConfigError

__all__ = [
    "Modality",
    "MODALITIES",
    "SlotGuess",
    "guess_slot",
    "guess_slots",
    "canonical_slot",
    "canonical_slots",
    "slot_display_name",
    "is_label_map_name",
    "subsets_of",
    "contested_claims",
    "default_slots",
]

logger = logging.getLogger(__name__)

K = TypeVar("K")


@dataclasses.dataclass(frozen=True)
class Modality:
    """One imaging modality a model slot can hold.

    Args:
        key: lower-case canonical slot key, as stored in bundles (``"t1c"``).
        name: short name for display (``"T1c"``).
        aliases: other spellings of file names and series descriptions, matched case-insensitively;
            a multi-word alias is a sequence of tokens (see :func:`guess_slot`).
        description: one sentence for tooltips and documentation.
    """

    key: str
    name: str
    aliases: tuple[str, ...]
    description: str


def _modality(key: str, name: str, description: str, *aliases: str) -> tuple[str, Modality]:
    return key, Modality(key=key, name=name, aliases=tuple(aliases), description=description)


# Order matters: the four BraTS sequences first, in the order BraTS-style bundles use.
MODALITIES: dict[str, Modality] = dict(
    [
        _modality(
            "flair",
            "FLAIR",
            "T2-weighted fluid-attenuated inversion recovery (T2-FLAIR): oedema and non-enhancing tumour.",
            "Flair", "t2f", "fla", "T2 FLAIR", "T2FLAIR", "T2-FLAIR", "T2_FLAIR", "AX T2 FLAIR",
            "FLAIR T2", "T2 FLAIR FS", "3D FLAIR", "dark fluid", "darkfluid", "T2 dark fluid",
        ),
        _modality(
            "t1",
            "T1",
            "Native (pre-contrast) T1-weighted MRI.",
            "t1n", "T1w", "T1-weighted", "T1 weighted", "t1 native", "native T1", "t1native",
            "t1 pre", "t1pre", "T1 pre-contrast", "T1 precontrast", "T1 pre contrast", "pre-contrast",
            "precontrast", "pre-contrast T1", "precontrast T1", "MPRAGE", "T1 MPRAGE",
            "Ax T1 MPRAGE", "T1 SE", "T1 TSE",
        ),
        _modality(
            "t1c",
            "T1c",
            "T1-weighted MRI after gadolinium contrast (T1Gd, T1ce): the enhancing tumour.",
            "T1ce", "t1gd", "T1Gd", "t1 gd", "t1_gd", "T1-Gd", "t1post", "t1 post", "T1 POST GAD",
            "T1 C", "T1+C", "T1-C", "T1 CE", "T1 contrast", "T1 gad", "T1 gado", "T1 enhanced",
            "post-contrast", "post contrast", "postcontrast", "post-contrast T1", "T1 post-contrast",
            "T1 postcontrast", "contrast-enhanced T1", "CE T1", "post gad", "T1 MPRAGE post",
            "T1 MPRAGE GD", "T1 POST",
        ),
        _modality(
            "t2",
            "T2",
            "T2-weighted MRI.",
            "T2w", "T2-weighted", "T2 weighted", "T2W_TSE", "T2 TSE", "T2 FSE", "AX T2",
        ),
        _modality(
            "pd",
            "PD",
            "Proton-density-weighted MRI.",
            "PDw", "proton density", "proton-density", "PD weighted", "PD-weighted",
        ),
        _modality("ct", "CT", "X-ray computed tomography.", "computed tomography"),
        _modality(
            "adc",
            "ADC",
            "Apparent diffusion coefficient map computed from diffusion-weighted MRI.",
            "ADC map", "apparent diffusion coefficient", "DWI ADC", "diffusion ADC",
        ),
        _modality(
            "dwi",
            "DWI",
            "Diffusion-weighted MRI (trace or b = 1000 s/mm2 image).",
            "diffusion", "diffusion weighted", "diffusion-weighted", "b1000", "DWI b1000",
        ),
        _modality(
            "swi",
            "SWI",
            "Susceptibility-weighted MRI.",
            "susceptibility weighted", "susceptibility-weighted", "SWAN",
        ),
        _modality("pet", "PET", "Positron emission tomography.", "FDG", "FDG PET", "FET PET"),
    ]
)

# Image file extensions stripped before tokenising, longest first so ".seg.nrrd" wins over ".nrrd".
_EXTENSIONS = (".seg.nrrd", ".nii.gz", ".nhdr", ".nrrd", ".nii", ".mha", ".mhd", ".mgz", ".dcm", ".hdf5", ".h5")

# Names made of these tokens are label maps or masks, never an input image.
_LABEL_WORDS = frozenset(
    {
        "seg", "segmentation", "segmentations", "label", "labels", "labelmap", "mask", "brainmask",
        "otmulticlass", "gt", "groundtruth", "truth", "annotation", "annotations", "roi", "aseg",
    }
)

# Of those, the ones that name a mask rather than a label map.
_MASK_WORDS = frozenset({"mask", "brainmask", "roi"})


def is_label_map_name(name: str) -> bool:
    """True for a file or series name that reads as a label map (``seg``, ``OTMultiClass``...), not a mask."""
    if _strip(name)[1] == ".seg.nrrd":
        return True
    words = {t for t in (*_coarse_tokens(name), *_tokens(name)) if t in _LABEL_WORDS}
    return bool(words - _MASK_WORDS)


# A T1 named together with one of these is the post-contrast T1 ("T1 MPRAGE POST" -> t1c) ...
_CONTRAST_WORDS = frozenset(
    {"post", "gad", "gd", "gado", "gadolinium", "contrast", "ce", "c", "enhanced", "postcontrast"}
)
# ... unless the name also says it is the native one ("T1 pre contrast", "T1 without contrast").
_NATIVE_WORDS = frozenset({"pre", "precontrast", "native", "non", "without", "wo", "nc"})

_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[0-9])(?=[A-Z])")
_NON_ALNUM = re.compile(r"[^0-9A-Za-z]+")
_WITHOUT = re.compile(r"(?i)(?<![0-9a-z])w/o(?![0-9a-z])")


def _strip(name: str) -> tuple[str, str]:
    """The file name without folders, and the image extension it had ("" if none)."""
    # "w/o" is a word, not a folder: "T1 w/o contrast" must keep its T1
    base = re.split(r"[\\/]", _WITHOUT.sub(" without ", name.strip()))[-1]
    low = base.lower()
    for ext in _EXTENSIONS:
        if low.endswith(ext) and len(base) > len(ext):
            return base[: -len(ext)], ext
    return base, ""


def _tokens(name: str) -> tuple[str, ...]:
    """Lower-case tokens of a file or series name.

    Folders and image extensions go; the rest splits on every non-alphanumeric character, then at
    lower->Upper and digit->Upper boundaries (``avg152T1`` -> ``avg152``, ``t1``; ``T1Gd`` -> ``t1``,
    ``gd``), so ``T1c``, ``t1ce`` and ``t2f`` stay single tokens.
    """
    base, _ = _strip(name)
    out: list[str] = []
    for word in _NON_ALNUM.split(base):
        out.extend(part.lower() for part in _CAMEL.split(word) if part)
    return tuple(out)


def _coarse_tokens(name: str) -> tuple[str, ...]:
    """Tokens split on non-alphanumeric characters only (keeps ``OTMultiClass`` whole)."""
    base, _ = _strip(name)
    return tuple(word.lower() for word in _NON_ALNUM.split(base) if word)


def _build_alias_index() -> tuple[dict[tuple[str, ...], tuple[str, str]], dict[str, str]]:
    """Token sequence -> (slot, alias as registered), and exact lower-case alias -> slot."""
    index: dict[tuple[str, ...], tuple[str, str]] = {}
    exact: dict[str, str] = {}
    for key, modality in MODALITIES.items():
        for alias in (key, *modality.aliases):
            prior = exact.setdefault(alias.lower(), key)
            if prior != key:
                raise ValueError(f"alias {alias!r} given to both {prior} and {key}")
            # The camelCase split depends on case ("T2W" -> t2, w; "t2w" -> t2w): index every form.
            for form in (alias, alias.lower(), alias.upper()):
                tokens = _tokens(form)
                slot, _ = index.setdefault(tokens, (key, alias))
                if slot != key:
                    raise ValueError(f"alias {alias!r} of {key} reads like one of {slot}: {' '.join(tokens)}")
    return index, exact


_ALIAS_INDEX, _EXACT_ALIAS = _build_alias_index()
_MAX_ALIAS_TOKENS = max(len(tokens) for tokens in _ALIAS_INDEX)


@dataclasses.dataclass(frozen=True)
class SlotGuess:
    """What :func:`guess_slot` made of one name.

    Args:
        name: the name as given (file path, file name or series description).
        slot: the modality key, or None when the name was refused.
        reason: why this slot, or why none.
    """

    name: str
    slot: str | None
    reason: str


@dataclasses.dataclass(frozen=True)
class _Match:
    start: int
    stop: int
    slot: str
    alias: str  # the matched tokens, space-separated


def _match(tokens: tuple[str, ...]) -> list[_Match]:
    """Greedy left-to-right, longest alias first: "T2 FLAIR" is one flair match, not t2 + flair."""
    matches: list[_Match] = []
    i = 0
    while i < len(tokens):
        for length in range(min(_MAX_ALIAS_TOKENS, len(tokens) - i), 0, -1):
            hit = _ALIAS_INDEX.get(tokens[i : i + length])
            if hit is not None:
                matches.append(_Match(i, i + length, hit[0], " ".join(tokens[i : i + length])))
                i += length
                break
        else:
            i += 1
    return matches


def _join(keys: Sequence[str]) -> str:
    keys = list(keys)
    return keys[0] if len(keys) == 1 else ", ".join(keys[:-1]) + " and " + keys[-1]


def _guess(name: str) -> tuple[str | None, str]:
    base, ext = _strip(name)
    if ext == ".seg.nrrd":
        return None, f"looks like a label or mask file, not an image ({ext} is a Slicer segmentation)"
    words = [t for t in (*_coarse_tokens(name), *_tokens(name)) if t in _LABEL_WORDS]
    if words:
        return None, f"looks like a label or mask file, not an image ('{words[0]}')"

    tokens = _tokens(name)
    matches = _match(tokens)
    if not matches:
        return None, f"no modality name recognised in '{base}'"

    slots = list(dict.fromkeys(m.slot for m in matches))
    if set(slots) <= {"t1", "t1c"} and not any(t in _NATIVE_WORDS for t in tokens):
        # A t1c match made only of contrast words ("post contrast") qualifies the T1 beside it.
        qualifiers = [m for m in matches if m.slot == "t1c" and set(tokens[m.start : m.stop]) <= _CONTRAST_WORDS]
        proper = [m for m in matches if m not in qualifiers]
        used = {i for m in matches for i in range(m.start, m.stop)}
        loose = [t for i, t in enumerate(tokens) if i not in used and t in _CONTRAST_WORDS]
        if proper and all(m.slot == "t1" for m in proper) and (qualifiers or loose):
            word = qualifiers[0].alias if qualifiers else loose[0]
            return "t1c", f"alias '{proper[0].alias}' of t1 qualified by contrast word '{word}': t1c"
    if len(slots) > 1:
        return None, f"ambiguous: '{base}' matches {_join(slots)}"
    return slots[0], f"alias '{matches[0].alias}' of {slots[0]}"


def _slot_key(slot: str) -> str:
    """Canonical key of a model slot; slots outside the registry are kept, lower-cased."""
    try:
        return canonical_slot(slot)
    except ConfigError:
        return slot.strip().lower()


def guess_slot(name: str, slots: Sequence[str] | None = None) -> SlotGuess:
    """Guess which modality slot an image file or DICOM series name holds.

    The name loses its folders and image extension and is split into lower-case tokens (on every
    non-alphanumeric character, then at lower->Upper and digit->Upper boundaries). Aliases of
    :data:`MODALITIES` are matched as token sequences, longest first. A T1 qualified by a contrast
    word (post, gad, gd, contrast, ce, c, enhanced...) is ``t1c``.

    Args:
        name: a file path, file name or series description.
        slots: the model's slot keys; a guess outside them is refused. None accepts any modality.

    Returns:
        The guess; ``slot`` is None when no alias matches, when aliases of two modalities match,
        when the name looks like a label or mask file, or when the modality is not in ``slots``.
        ``reason`` says which alias decided, or why nothing was assigned.

    Examples::

        >>> guess_slot("BraTS-GLI-00001-000-t2f.nii.gz").slot
        'flair'
        >>> guess_slot("T1 POST GAD").slot
        't1c'
    """
    slot, reason = _guess(name)
    if slot is not None and slots is not None and slot not in {_slot_key(s) for s in slots}:
        return SlotGuess(name, None, f"'{slot}' is not one of the model's slots: {', '.join(slots)}")
    logger.debug("guess_slot(%r) -> %s: %s", name, slot, reason)
    return SlotGuess(name, slot, reason)


def guess_slots(names: Sequence[str], slots: Sequence[str] | None = None) -> dict[str, SlotGuess]:
    """Guess the slot of several names at once; a slot claimed by two names goes to neither.

    Args:
        names: file paths, file names or series descriptions (repeats count once).
        slots: the model's slot keys, as for :func:`guess_slot`.

    Returns:
        name -> guess, in the order of ``names``. Names whose slot another name also matched are
        unassigned, with a reason naming the other name(s).
    """
    guesses = {name: guess_slot(name, slots) for name in dict.fromkeys(names)}
    for name, claimants in contested_claims({n: g.slot for n, g in guesses.items()}).items():
        others = ", ".join(f"'{other}'" for other in claimants if other != name)
        guesses[name] = SlotGuess(name, None, f"{guesses[name].slot} also matched by {others}")
    return guesses


def contested_claims(claims: Mapping[K, str | None]) -> dict[K, list[K]]:
    """The claimants that must give their slot up because another claims it too.

    Two files (or volumes) that look like the same slot are both left for the user to choose:
    picking one would be a silent guess.

    Args:
        claims: claimant (a file name, a volume) -> the slot it looks like, or None.
    Returns:
        each contested claimant -> every claimant of its slot, in the order of ``claims``.
    """
    by_slot: dict[str, list[K]] = {}
    for claimant, slot in claims.items():
        if slot is not None:
            by_slot.setdefault(slot, []).append(claimant)
    return {c: group for group in by_slot.values() if len(group) > 1 for c in group}


def default_slots(found: Iterable[str]) -> tuple[str, ...]:
    """The slots of a model trained on data holding ``found``: each once, in registry order
    (the four BraTS sequences first), so the same data always gives the same slot order."""
    present = set(found)
    return tuple(key for key in MODALITIES if key in present) + tuple(sorted(present - set(MODALITIES)))


def canonical_slot(name: str) -> str:
    """The slot key of an exact key or alias (case-insensitive), without guessing.

    Raises:
        ConfigError: ``name`` is neither a key nor an alias; the message lists the known keys.
    """
    key = _EXACT_ALIAS.get(name.strip().lower())
    if key is None:
        raise ConfigError(f"unknown modality {name!r}: known keys are {', '.join(MODALITIES)}")
    return key


def canonical_slots(names: Iterable[str]) -> tuple[str, ...]:
    """:func:`canonical_slot` of each name, in order (``("t2f", "T1ce")`` -> ``("flair", "t1c")``)."""
    return tuple(canonical_slot(name) for name in names)


def slot_display_name(key: str) -> str:
    """Short display name of a slot key or alias (``"t1c"`` -> ``"T1c"``).

    Raises:
        ConfigError: unknown key.
    """
    return MODALITIES[canonical_slot(key)].name


def subsets_of(slots: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset of ``slots``, smallest first, each in the given order."""
    return [c for r in range(1, len(slots) + 1) for c in itertools.combinations(slots, r)]
