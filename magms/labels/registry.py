"""The registered label schemes, built from one table of components (names, colours, codes).

Brain-tumour data sets number the same tissue differently: BraTS 2013 has necrosis (1), edema (2),
non-enhancing tumour (3) and enhancing tumour (4); MSD Task01 merges necrosis and non-enhancing
tumour into one label (2) and renumbers; BraTS 2021 keeps that merge as the necrotic tumour core
(1) but writes enhancing tumour as 4, BraTS 2023 as 3.
"""

from __future__ import annotations

from magms.errors import ConfigError
from magms.labels.schemes import Label, LabelScheme, Region
from magms.labels.terminology import (
    ALTERED,
    ANATOMICAL,
    BRAIN,
    CSF_SPACE,
    EDEMA,
    GREY_MATTER,
    NECROSIS,
    NEOPLASM,
    NEOPLASM_PRIMARY,
    TISSUE,
    WHITE_MATTER,
    Code,
)

__all__ = ["TUMOUR_REGIONS", "SCHEMES", "get_scheme"]

# BraTS evaluation regions, over the finest components any tumour scheme has.
TUMOUR_REGIONS: tuple[Region, ...] = (
    Region("wt", "Whole tumour", ("necrosis", "non_enhancing", "edema", "enhancing")),
    Region("tc", "Tumour core", ("necrosis", "non_enhancing", "enhancing")),
    Region("et", "Enhancing tumour", ("enhancing",)),
)

# Component key -> (default name, colour, category, type, anatomic region). One place, so the
# same tissue has the same colour and codes in every scheme.
_COMPONENTS: dict[str, tuple[str, tuple[int, int, int], Code, Code, Code | None]] = {
    "background": ("Background", (0, 0, 0), TISSUE, TISSUE, None),
    "necrosis": ("Necrosis", (214, 39, 40), ALTERED, NECROSIS, BRAIN),
    "necrotic_core": ("Necrotic tumour core", (227, 74, 51), ALTERED, NECROSIS, BRAIN),
    "edema": ("Edema", (44, 160, 44), ALTERED, EDEMA, BRAIN),
    "non_enhancing": ("Non-enhancing tumour", (31, 119, 180), ALTERED, NEOPLASM, BRAIN),
    "enhancing": ("Enhancing tumour", (255, 215, 0), ALTERED, NEOPLASM_PRIMARY, BRAIN),
    "csf": ("CSF", (85, 188, 255), ANATOMICAL, CSF_SPACE, None),
    "grey_matter": ("Grey matter", (200, 200, 235), ANATOMICAL, GREY_MATTER, None),
    "white_matter": ("White matter", (250, 250, 210), ANATOMICAL, WHITE_MATTER, None),
}
_PARTS = {"necrotic_core": ("necrosis", "non_enhancing")}


def _label(value: int, key: str, name: str | None = None) -> Label:
    """The label of component ``key`` written as ``value``, named ``name`` or the default."""
    default, color, category, kind, region = _COMPONENTS[key]
    return Label(value, key, name or default, color, category, kind, _PARTS.get(key, ()), region)


def _labels(*specs: tuple[int, str] | tuple[int, str, str]) -> tuple[Label, ...]:
    """Background 0 and one label per ``(value, component key[, name])``."""
    return (_label(0, "background"), *(_label(*spec) for spec in specs))


def _brats(key: str, name: str, edema: str, enhancing: int, description: str) -> LabelScheme:
    """A BraTS 2017+ scheme: they differ only in the edema's name and the enhancing tumour's value."""
    labels = _labels(
        (1, "necrotic_core", "Necrotic tumour core (NCR)"),
        (2, "edema", edema),
        (enhancing, "enhancing", "Enhancing tumour (ET)"),
    )
    return LabelScheme(key, name, labels, TUMOUR_REGIONS, description)


SCHEMES: dict[str, LabelScheme] = {
    scheme.key: scheme
    for scheme in (
        LabelScheme(
            "brats2013",
            "BraTS 2013",
            _labels((1, "necrosis"), (2, "edema"), (3, "non_enhancing"), (4, "enhancing")),
            TUMOUR_REGIONS,
            "BraTS 2012-2013 glioma labels (Menze et al., IEEE TMI 2015), e.g. OTMultiClass.nii.gz.",
        ),
        LabelScheme(
            "msd_task01",
            "MSD Task01 BrainTumour",
            _labels((1, "edema"), (2, "necrotic_core", "Non-enhancing tumour"), (3, "enhancing")),
            TUMOUR_REGIONS,
            "Medical Segmentation Decathlon Task01: label 2 'non-enhancing tumour' is necrosis and "
            "non-enhancing tumour together (Antonelli et al., Nat Commun 2022).",
        ),
        _brats(
            "brats2021",
            "BraTS 2017-2021",
            edema="Peritumoral edema (ED)",
            enhancing=4,
            description="BraTS 2017-2021 glioma labels (Baid et al. 2021); value 3 is unused.",
        ),
        _brats(
            "brats2023",
            "BraTS 2023+",
            edema="Surrounding non-enhancing FLAIR hyperintensity (SNFH)",
            enhancing=3,
            description="BraTS 2023 and later (GLI, MET, MEN, PED, SSA): enhancing tumour is 3.",
        ),
        LabelScheme(
            "brain_tissue",
            "Brain tissue",
            _labels((1, "csf"), (2, "grey_matter"), (3, "white_matter")),
            (),
            "Background, CSF, grey and white matter (iSEG-like; SPM tissue priors by argmax).",
        ),
    )
}


def get_scheme(key: str | LabelScheme) -> LabelScheme:
    """The registered scheme called ``key`` (a scheme passes through unchanged).

    Raises:
        ConfigError: unknown key; the message lists the known ones.
    """
    if isinstance(key, LabelScheme):
        return key
    try:
        return SCHEMES[key]
    except KeyError:
        raise ConfigError(f"unknown label scheme {key!r}: known schemes are {', '.join(SCHEMES)}") from None
