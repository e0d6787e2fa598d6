"""Modality registry and slot guessing from file and series names (no torch)."""

from __future__ import annotations

import pytest

from conftest import DATA, needs_data
from magms.errors import ConfigError
from magms.modalities import (
    MODALITIES,
    Modality,
    SlotGuess,
    _tokens,
    canonical_slot,
    guess_slot,
    guess_slots,
    slot_display_name,
)

LABEL = "looks like a label or mask file"
NOTHING = "no modality name recognised"

# Every image file under the real data folder -> expected slot, or None and a piece of the reason.
_BRATS_2013 = {
    "Flair_subtrMeanDivStd.nii.gz": "flair",
    "T1c_subtrMeanDivStd.nii.gz": "t1c",
    "OTMultiClass.nii.gz": LABEL,
    "brainmask.nii.gz": LABEL,
}
REAL_FILES: dict[str, str] = {
    **{f"brats_flair_t1c/brats_2013_pat000{p}_1/{f}": s for p in (3, 4, 5, 6) for f, s in _BRATS_2013.items()},
    # BraTS 2018: <case>/<case>_<sequence>.nii.gz; t1ce is the post-contrast T1
    **{
        f"brats18/{case}/{case}_{suffix}.nii.gz": slot
        for case in (
            "Brats18_2013_2_1", "Brats18_CBICA_AMH_1", "Brats18_CBICA_AOP_1", "Brats18_CBICA_AOZ_1",
            "Brats18_CBICA_APR_1", "Brats18_CBICA_APY_1", "Brats18_CBICA_APZ_1", "Brats18_CBICA_AQO_1",
            "Brats18_CBICA_AQP_1", "Brats18_CBICA_AQQ_1", "Brats18_CBICA_AQR_1", "Brats18_TCIA05_396_1",
        )
        for suffix, slot in (("flair", "flair"), ("t1", "t1"), ("t1ce", "t1c"), ("t2", "t2"), ("seg", LABEL))
    },
    "brats_unlabelled/BraTS-GLI-00001-000/BraTS-GLI-00001-000-t1n.nii.gz": "t1",
    "brats_unlabelled/BraTS-GLI-00001-000/BraTS-GLI-00001-000-t1c.nii.gz": "t1c",
    "brats_unlabelled/BraTS-GLI-00001-000/BraTS-GLI-00001-000-t2w.nii.gz": "t2",
    "brats_unlabelled/BraTS-GLI-00001-000/BraTS-GLI-00001-000-t2f.nii.gz": "flair",
    "brats_unlabelled/AURORA-metastasis/flair.nii.gz": "flair",
    "brats_unlabelled/AURORA-metastasis/t1c.nii.gz": "t1c",
    "mni_avg152/canonical_avg152T1.nii.gz": "t1",
    "mni_avg152/canonical_avg152T2.nii.gz": "t2",
    "mni_avg152/canonical_avg152PD.nii.gz": "pd",
    "mni_avg152/toolbox_OldSeg_csf.nii.gz": LABEL,
    "mni_avg152/toolbox_OldSeg_grey.nii.gz": LABEL,
    "mni_avg152/toolbox_OldSeg_white.nii.gz": LABEL,
    "mni_avg152/toolbox_FieldMap_brainmask.nii.gz": LABEL,
    # four-channel crops: the channels are fixed by the file format, the name says nothing
    **{
        f"brats_4seq_patches/BRATS_009/BRATS_009.nii.gz_{crop}.h5": NOTHING
        for crop in (
            "1_x73_y11_z63", "2_x26_y41_z67", "3_x33_y65_z82", "4_x16_y62_z63", "5_x72_y76_z90", "6_x46_y13_z68"
        )
    },
}


def _check(guess: SlotGuess, expected: str) -> None:
    if expected in MODALITIES:
        assert guess.slot == expected, guess.reason
        assert expected in guess.reason
    else:
        assert guess.slot is None, f"{guess.name} -> {guess.slot}: {guess.reason}"
        assert expected in guess.reason


@needs_data
@pytest.mark.parametrize("relpath, expected", sorted(REAL_FILES.items()))
def test_real_file_names(relpath: str, expected: str) -> None:
    path = DATA / relpath
    assert path.is_file(), f"{path} is listed but missing"
    _check(guess_slot(str(path)), expected)
    _check(guess_slot(path.name), expected)


@needs_data
def test_table_covers_every_image_file() -> None:
    images = {
        p.relative_to(DATA).as_posix()
        for p in DATA.rglob("*")
        if p.is_file() and p.name.endswith((".nii.gz", ".nii", ".nrrd", ".mha", ".h5"))
    }
    assert images == set(REAL_FILES), "update REAL_FILES to match the data folder"


@needs_data
def test_real_brats_case_assigns_all_four() -> None:
    folder = DATA / "brats_unlabelled" / "BraTS-GLI-00001-000"
    guesses = guess_slots(sorted(str(p) for p in folder.glob("*.nii.gz")))
    assert sorted(g.slot for g in guesses.values()) == ["flair", "t1", "t1c", "t2"]


@pytest.mark.parametrize(
    "name, slot",
    [
        # BraTS 2013, BraTS 2021+, MSD, BraTS-Toolkit spellings
        ("Flair", "flair"),
        ("T1c", "t1c"),
        ("t2f", "flair"),
        ("t1n", "t1"),
        ("t2w", "t2"),
        ("FLAIR", "flair"),
        ("T1w", "t1"),
        ("t1gd", "t1c"),
        ("T2w", "t2"),
        ("fla", "flair"),
        ("t1", "t1"),
        ("t2", "t2"),
        ("BraTS20_Training_001_t1ce.nii.gz", "t1c"),
        ("sub-01_ses-1_T1w.nii.gz", "t1"),
        # DICOM series descriptions
        ("AX T2 FLAIR", "flair"),
        ("T2 FLAIR", "flair"),
        ("T2FLAIR", "flair"),
        ("T2_FLAIR", "flair"),
        ("T1 POST GAD", "t1c"),
        ("Ax T1 MPRAGE", "t1"),
        ("T1 MPRAGE", "t1"),
        ("T1 MPRAGE POST", "t1c"),
        ("T1 MPRAGE post-contrast", "t1c"),
        ("T2W_TSE", "t2"),
        ("t1_gd", "t1c"),
        ("t1 gd", "t1c"),
        ("T1Gd", "t1c"),
        ("T1GD", "t1c"),
        ("t1ce", "t1c"),
        ("T1CE", "t1c"),
        ("t1post", "t1c"),
        ("T1 C", "t1c"),
        ("T1+C", "t1c"),
        ("T1 with contrast", "t1c"),
        ("post-contrast", "t1c"),
        ("post contrast", "t1c"),
        ("pre-contrast T1", "t1"),
        ("pre contrast", "t1"),
        ("T1 pre contrast", "t1"),
        ("t1 pre", "t1"),
        ("T1 w/o contrast", "t1"),
        ("T1W", "t1"),
        ("T2F", "flair"),
        ("PD", "pd"),
        ("proton density", "pd"),
        ("ADC", "adc"),
        ("apparent diffusion coefficient", "adc"),
        ("DWI", "dwi"),
        ("diffusion", "dwi"),
        ("b1000", "dwi"),
        ("CT", "ct"),
        ("SWI", "swi"),
        ("FDG PET", "pet"),
        ("T2 post", "t2"),  # contrast words qualify only a T1
        ("T1_masked.nii.gz", "t1"),  # a skull-stripped image, not a mask
    ],
)
def test_series_names(name: str, slot: str) -> None:
    guess = guess_slot(name)
    assert guess == SlotGuess(name, slot, guess.reason)
    assert guess.reason and slot in guess.reason


def test_reason_names_the_alias() -> None:
    assert guess_slot("BraTS-GLI-00001-000-t2f.nii.gz").reason == "alias 't2f' of flair"


@pytest.mark.parametrize(
    "name, words",
    [
        ("T1 T2 mix", "t1 and t2"),
        ("FLAIR_T1", "flair and t1"),
        ("t1c_t2f_t2w", "t1c, flair and t2"),
        ("FLAIR post contrast", "flair and t1c"),
    ],
)
def test_ambiguous_names_refused(name: str, words: str) -> None:
    guess = guess_slot(name)
    assert guess.slot is None
    assert guess.reason == f"ambiguous: '{name}' matches {words}"


@pytest.mark.parametrize(
    "name",
    ["t2f_seg.nii.gz", "BraTS2021_00000_seg.nii.gz", "OTMultiClass", "labels.nii.gz", "T1_brain_mask.nii.gz",
     "tumor.seg.nrrd", "Segmentation.nrrd", "flair_gt.nii.gz", "aseg.mgz", "roi_t1c.nii.gz", "ground truth"],
)
def test_label_files_refused(name: str) -> None:
    guess = guess_slot(name)
    assert guess.slot is None
    assert guess.reason.startswith(LABEL)


def test_nothing_recognised() -> None:
    assert guess_slot("xyz") == SlotGuess("xyz", None, "no modality name recognised in 'xyz'")
    assert guess_slot("/data/case_001/image_0000.nii.gz").reason == "no modality name recognised in 'image_0000'"


def test_tokenizer() -> None:
    assert _tokens("/a/b/canonical_avg152T1.nii.gz") == ("canonical", "avg152", "t1")
    assert _tokens("Flair_subtrMeanDivStd.nii.gz") == ("flair", "subtr", "mean", "div", "std")
    assert _tokens("T1Gd") == ("t1", "gd")
    assert _tokens("T2FLAIR") == ("t2", "flair")
    assert _tokens("T1c t1ce t2f.mha") == ("t1c", "t1ce", "t2f")
    assert _tokens(r"C:\data\x.seg.nrrd") == ("x",)


def test_slots_restriction() -> None:
    guess = guess_slot("canonical_avg152PD.nii.gz", slots=["flair", "t1c"])
    assert guess.slot is None
    assert guess.reason == "'pd' is not one of the model's slots: flair, t1c"
    assert guess_slot("T1 POST GAD", slots=["flair", "t1c"]).slot == "t1c"
    # a t1c image is not silently used as t1
    assert guess_slot("T1c.nii.gz", slots=("t1", "t2")).slot is None
    # slots given by alias still count
    assert guess_slot("t2f.nii.gz", slots=("FLAIR",)).slot == "flair"


def test_guess_slots_duplicates() -> None:
    names = ["a/T1c.nii.gz", "b/t1ce.nii.gz", "flair.nii.gz", "seg.nii.gz"]
    guesses = guess_slots(names)
    assert list(guesses) == names
    assert guesses["a/T1c.nii.gz"] == SlotGuess("a/T1c.nii.gz", None, "t1c also matched by 'b/t1ce.nii.gz'")
    assert guesses["b/t1ce.nii.gz"].slot is None
    assert "'a/T1c.nii.gz'" in guesses["b/t1ce.nii.gz"].reason
    assert guesses["flair.nii.gz"].slot == "flair"
    assert guesses["seg.nii.gz"].slot is None


def test_guess_slots_with_restriction() -> None:
    guesses = guess_slots(["x_t2f.nii.gz", "x_t1c.nii.gz", "x_t1n.nii.gz", "x_t2w.nii.gz"], slots=["flair", "t1c"])
    assert {n: g.slot for n, g in guesses.items()} == {
        "x_t2f.nii.gz": "flair",
        "x_t1c.nii.gz": "t1c",
        "x_t1n.nii.gz": None,
        "x_t2w.nii.gz": None,
    }


def test_registry() -> None:
    assert list(MODALITIES)[:4] == ["flair", "t1", "t1c", "t2"]
    assert {"pd", "ct", "adc", "dwi", "swi", "pet"} <= set(MODALITIES)
    for key, modality in MODALITIES.items():
        assert isinstance(modality, Modality)
        assert modality.key == key == key.lower()
        assert modality.name and modality.description
        # every alias guesses its own modality
        for alias in modality.aliases:
            assert guess_slot(alias).slot == key, alias
            assert canonical_slot(alias) == key


def test_aliases_unique_across_modalities() -> None:
    seen: dict[str, str] = {}
    for key, modality in MODALITIES.items():
        for alias in (key, *modality.aliases):
            assert seen.setdefault(alias.lower(), key) == key, alias


def test_canonical_slot() -> None:
    assert canonical_slot("FLAIR") == "flair"
    assert canonical_slot(" t2f ") == "flair"
    assert canonical_slot("T1Gd") == "t1c"
    assert canonical_slot("t1c") == "t1c"
    with pytest.raises(ConfigError, match="'T1 mystery'.*flair, t1, t1c, t2"):
        canonical_slot("T1 mystery")


def test_slot_display_name() -> None:
    assert slot_display_name("flair") == "FLAIR"
    assert slot_display_name("t1ce") == "T1c"
    with pytest.raises(ConfigError):
        slot_display_name("xyz")

