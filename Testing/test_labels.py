"""Label schemes, explicit maps between them, regions and Slicer terminology (no torch)."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest

from conftest import DATA, needs_data
from magms.errors import ConfigError
from magms.labels import (
    SCHEMES,
    TUMOUR_REGIONS,
    Code,
    Label,
    LabelScheme,
    Region,
    get_scheme,
    label_map,
    map_labels,
)

TUMOUR = ("brats2013", "msd_task01", "brats2021", "brats2023")


@pytest.mark.parametrize(
    "src, dst, expected",
    [
        # the data README: BraTS 2013 -> MSD Task01 is 2->1, 1 and 3->2, 4->3
        ("brats2013", "msd_task01", {0: 0, 1: 2, 2: 1, 3: 2, 4: 3}),
        ("brats2013", "brats2021", {0: 0, 1: 1, 2: 2, 3: 1, 4: 4}),
        ("brats2013", "brats2023", {0: 0, 1: 1, 2: 2, 3: 1, 4: 3}),
        ("msd_task01", "brats2021", {0: 0, 1: 2, 2: 1, 3: 4}),
        ("brats2021", "msd_task01", {0: 0, 1: 2, 2: 1, 4: 3}),
        ("brats2021", "brats2023", {0: 0, 1: 1, 2: 2, 4: 3}),
        ("brats2023", "brats2021", {0: 0, 1: 1, 2: 2, 3: 4}),
    ],
)
def test_label_map_table(src: str, dst: str, expected: dict[int, int]) -> None:
    assert label_map(src, dst) == expected


@pytest.mark.parametrize("key", list(SCHEMES))
def test_identity_map(key: str) -> None:
    assert label_map(key, key) == {v: v for v in SCHEMES[key].values}


@pytest.mark.parametrize(
    "src, dst, fragment",
    [
        ("msd_task01", "brats2013", "label 2 'necrotic_core'.*splits it into 1 'necrosis' and 3 'non_enhancing'"),
        ("brats2021", "brats2013", "brats2021 to brats2013.*label 1 'necrotic_core'"),
        ("brats2013", "brain_tissue", "brats2013 to brain_tissue.*label 1 'necrosis'.*has no label for it"),
        ("brain_tissue", "brats2021", "brain_tissue to brats2021.*label 1 'csf'"),
    ],
)
def test_unmappable_pair_raises(src: str, dst: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        label_map(src, dst)
    with pytest.raises(ConfigError):
        map_labels(np.zeros(3, dtype=np.uint8), src, dst)


@pytest.mark.parametrize("a, b", [(a, b) for a in TUMOUR[1:] for b in TUMOUR[1:] if a != b])
def test_round_trips(a: str, b: str) -> None:
    """MSD Task01, BraTS 2021 and 2023 hold the same components: there and back is the identity."""
    values = np.array(SCHEMES[a].values, dtype=np.int16)
    assert np.array_equal(map_labels(map_labels(values, a, b), b, a), values)
    there, back = label_map(a, b), label_map(b, a)
    assert {k: back[v] for k, v in there.items()} == {k: k for k in there}


@pytest.mark.parametrize("via, dst", [(v, d) for v in TUMOUR[1:] for d in TUMOUR[1:]])
def test_maps_compose(via: str, dst: str) -> None:
    """BraTS 2013 mapped through any merged scheme lands where the direct map puts it."""
    values = np.array(SCHEMES["brats2013"].values)
    direct = map_labels(values, "brats2013", dst)
    assert np.array_equal(map_labels(map_labels(values, "brats2013", via), via, dst), direct)


def test_map_labels_array() -> None:
    brats2013 = np.array([[0, 1, 2], [3, 4, 0]], dtype=np.uint8)
    out = map_labels(brats2013, "brats2013", "msd_task01")
    assert out.dtype == np.uint8 and out.shape == (2, 3)
    assert out.tolist() == [[0, 2, 1], [2, 3, 0]]
    # float label maps holding whole numbers (OTMultiClass is stored as float) keep their dtype
    out = map_labels(brats2013.astype(np.float32), "brats2013", "msd_task01")
    assert out.dtype == np.float32 and out.tolist() == [[0, 2, 1], [2, 3, 0]]
    assert map_labels(np.array([0, 4, 2]), "brats2021", "brats2023").tolist() == [0, 3, 2]


def test_map_labels_unknown_values_named() -> None:
    with pytest.raises(ConfigError, match=r"'brats2021'.*value\(s\) 3, 7 not in 0, 1, 2, 4"):
        map_labels(np.array([0, 1, 3, 7, 3]), "brats2021", "brats2023")
    with pytest.raises(ConfigError, match=r"value\(s\) -1"):
        map_labels(np.array([-1, 0]), "brats2013", "msd_task01")
    with pytest.raises(ConfigError, match="whole numbers, got 0.5"):
        map_labels(np.array([0.0, 0.5]), "brats2013", "msd_task01")


def test_region_masks() -> None:
    scheme = SCHEMES["brats2013"]
    labels = np.array([0, 1, 2, 3, 4])
    assert scheme.region_mask(labels, "wt").tolist() == [False, True, True, True, True]
    assert scheme.region_mask(labels, "tc").tolist() == [False, True, False, True, True]
    assert scheme.region_mask(labels, "et").tolist() == [False, False, False, False, True]
    for key in ("brats2021", "msd_task01", "brats2023"):
        other = SCHEMES[key]
        mapped = map_labels(labels, "brats2013", key)
        for region in ("wt", "tc", "et"):
            # regions agree across schemes on the same voxels
            assert np.array_equal(other.region_mask(mapped, region), scheme.region_mask(labels, region)), (key, region)
    cube = np.zeros((2, 2, 2), dtype=np.uint8)
    cube[0, 0, 0], cube[1, 1, 1] = 4, 2
    tc = SCHEMES["brats2021"].region_mask(cube, "tc")
    assert tc.dtype == bool and tc.shape == cube.shape and tc.sum() == 1 and tc[0, 0, 0]
    assert SCHEMES["brats2021"].region_values("wt") == (1, 2, 4)


def test_regions_per_scheme() -> None:
    for key in TUMOUR:
        assert tuple(r.key for r in SCHEMES[key].regions) == ("wt", "tc", "et")
    assert SCHEMES["brain_tissue"].regions == ()
    with pytest.raises(ConfigError, match="no region 'wt'.*none"):
        SCHEMES["brain_tissue"].region_mask(np.zeros(2), "wt")


def test_brats2021_contiguous() -> None:
    scheme = SCHEMES["brats2021"]
    assert scheme.values == (0, 1, 2, 4)
    assert scheme.num_classes == 4
    assert scheme.to_contiguous == {0: 0, 1: 1, 2: 2, 4: 3}
    assert scheme.from_contiguous == {0: 0, 1: 1, 2: 2, 3: 4}
    labels = np.array([[0, 4], [2, 1]], dtype=np.uint8)
    indices = scheme.encode(labels)
    assert indices.tolist() == [[0, 3], [2, 1]]
    assert np.array_equal(scheme.decode(indices), labels)
    with pytest.raises(ConfigError, match=r"value\(s\) 3"):
        scheme.encode(np.array([3]))
    with pytest.raises(ConfigError, match=r"value\(s\) 4"):
        scheme.decode(np.array([4]))


def test_lookup() -> None:
    scheme = SCHEMES["msd_task01"]
    assert scheme.label(2).key == "necrotic_core"
    assert scheme.label(2).parts == ("necrosis", "non_enhancing")
    assert scheme.by_key("edema").value == 1
    assert scheme.label(0).key == "background"
    with pytest.raises(ConfigError, match="no value 4; its values are 0, 1, 2, 3"):
        scheme.label(4)
    with pytest.raises(ConfigError, match="no label 'necrosis'"):
        scheme.by_key("necrosis")


def test_get_scheme() -> None:
    assert get_scheme("brats2021") is SCHEMES["brats2021"]
    assert get_scheme(SCHEMES["brats2013"]) is SCHEMES["brats2013"]
    assert list(SCHEMES) == ["brats2013", "msd_task01", "brats2021", "brats2023", "brain_tissue"]
    with pytest.raises(ConfigError, match="'brats2099'.*brats2013, msd_task01, brats2021, brats2023, brain_tissue"):
        get_scheme("brats2099")


@pytest.mark.parametrize("key", list(SCHEMES))
def test_to_dict_round_trip(key: str) -> None:
    scheme = SCHEMES[key]
    data = json.loads(json.dumps(scheme.to_dict()))
    again = LabelScheme.from_dict(data)
    assert again == scheme
    assert again.to_dict() == data
    assert label_map(again, scheme) == {v: v for v in scheme.values}


# sha256 of json.dumps(scheme.to_dict()) as magms 0.2.0 wrote it (labels.py before the split into
# magms/labels/): a bundle's "labels" must keep its bytes, key order included.
_SCHEME_JSON_SHA256 = {
    "brats2013": "b12e229100ff3b4aaa612dd709286fae7083d70012580bf0ebf676ce7610eb8a",
    "msd_task01": "543eaad23f7b2af9ff6d1fcea24c994b791c5e9a24d13907395479293869290f",
    "brats2021": "435f52cc4df7eb535ef76e4c26f541ad50f71de909968a8704ef73282478d70b",
    "brats2023": "9091fb3f6e819b7fb880b0aa3e3d74f1db8028203baa1bbec3d75fa70949d0d8",
    "brain_tissue": "dfc25cf7909024c466559f027457f95b0da909dbf7caa858501f8da60b4c40b3",
}


@pytest.mark.parametrize("key", list(SCHEMES))
def test_json_bytes_unchanged(key: str) -> None:
    data = SCHEMES[key].to_dict()
    # the order first, so a failure says where the bytes moved
    assert list(data) == ["key", "name", "description", "labels", "regions"]
    assert list(data["labels"][1]) == ["value", "key", "name", "color", "category", "type", "parts", "anatomic_region"]
    assert list(data["labels"][1]["type"]) == ["scheme", "value", "meaning"]
    assert all(list(region) == ["key", "name", "components"] for region in data["regions"])
    text = json.dumps(data)
    assert hashlib.sha256(text.encode()).hexdigest() == _SCHEME_JSON_SHA256[key]
    assert json.dumps(LabelScheme.from_dict(json.loads(text)).to_dict()) == text

def test_from_dict_unknown_and_missing_keys() -> None:
    data = SCHEMES["brats2021"].to_dict()
    with pytest.raises(ConfigError, match="unknown key.*'colour_map'"):
        LabelScheme.from_dict({**data, "colour_map": {}})
    bad_label = json.loads(json.dumps(data))
    bad_label["labels"][1]["colour"] = [1, 2, 3]
    with pytest.raises(ConfigError, match="label #1: unknown key.*'colour'"):
        LabelScheme.from_dict(bad_label)
    bad_code = json.loads(json.dumps(data))
    bad_code["labels"][1]["type"]["designator"] = "SCT"
    with pytest.raises(ConfigError, match="type: unknown key.*'designator'"):
        LabelScheme.from_dict(bad_code)
    missing = {k: v for k, v in data.items() if k != "labels"}
    with pytest.raises(ConfigError, match="missing key.*'labels'"):
        LabelScheme.from_dict(missing)
    bad_region = json.loads(json.dumps(data))
    bad_region["regions"][0]["parts"] = []
    with pytest.raises(ConfigError, match="region #0: unknown key.*'parts'"):
        LabelScheme.from_dict(bad_region)


def test_inconsistent_scheme_refused() -> None:
    base = SCHEMES["brats2013"]
    category, kind = base.label(1).category, base.label(1).type
    with pytest.raises(ConfigError, match="value 1 used by"):
        LabelScheme("x", "x", (*base.labels, Label(1, "extra", "Extra", (1, 2, 3), category, kind)))
    with pytest.raises(ConfigError, match="component 'necrosis' is in both"):
        core = Label(5, "core", "Core", (1, 2, 3), category, kind, parts=("necrosis", "edema"))
        LabelScheme("x", "x", (*base.labels, core))
    with pytest.raises(ConfigError, match="background"):
        LabelScheme("x", "x", base.labels[1:])
    with pytest.raises(ConfigError, match="colour"):
        LabelScheme("x", "x", (base.labels[0], Label(1, "a", "A", (0, 0, 300), category, kind)))
    with pytest.raises(ConfigError, match="region 'core' holds only part of label 2 'necrotic_core'"):
        LabelScheme("x", "x", SCHEMES["msd_task01"].labels, (Region("core", "Core", ("necrosis",)),))


@pytest.mark.parametrize("key", list(SCHEMES))
def test_every_label_has_colour_codes_and_distinct_colours(key: str) -> None:
    scheme = SCHEMES[key]
    assert scheme.values[0] == 0 and scheme.label(0).key == "background"
    colours = [label.color for label in scheme.labels]
    assert len(set(colours)) == len(colours), "colours must differ within a scheme"
    terms = {(label.category, label.type) for label in scheme.labels if label.key != "background"}
    assert len(terms) == scheme.num_classes - 1, "each label needs its own category/type"
    for label in scheme.labels:
        assert isinstance(label, Label) and label.name
        assert len(label.color) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in label.color)
        for code in (label.category, label.type):
            assert isinstance(code, Code) and code.scheme == "SCT"
            assert code.value.isdigit() and code.meaning


def test_snomed_codes() -> None:
    brats = SCHEMES["brats2013"]
    assert brats.label(1).type == Code("SCT", "6574001", "Necrosis")
    assert brats.label(2).type == Code("SCT", "79654002", "Edema")
    assert brats.label(3).type.value == "108369006"  # Neoplasm
    for value in (1, 2, 3, 4):
        assert brats.label(value).category == Code("SCT", "49755003", "Morphologically Altered Structure")
    tissue = SCHEMES["brain_tissue"]
    assert [tissue.label(v).type.value for v in (1, 2, 3)] == ["280371009", "389081007", "389080008"]
    assert {tissue.label(v).category.value for v in (1, 2, 3)} == {"123037004"}


_ENTRY = re.compile(
    r"^Segmentation category and type - (3D Slicer General Anatomy list|DICOM master list)"
    r"~SCT\^\d+\^[^~^]+~SCT\^\d+\^[^~^]+~\^\^~Anatomic codes - DICOM master list~(SCT\^\d+\^[^~^]+|\^\^)~\^\^$"
)


@pytest.mark.parametrize("key", list(SCHEMES))
def test_slicer_terminology_format(key: str) -> None:
    scheme = SCHEMES[key]
    for value in scheme.values:
        entry = scheme.slicer_terminology(value)
        assert _ENTRY.match(entry), entry
        assert len(entry.split("~")) == 7


def test_slicer_terminology_examples() -> None:
    assert SCHEMES["brats2021"].slicer_terminology(2) == (
        "Segmentation category and type - 3D Slicer General Anatomy list"
        "~SCT^49755003^Morphologically Altered Structure~SCT^79654002^Edema~^^"
        "~Anatomic codes - DICOM master list~SCT^12738006^Brain~^^"
    )
    # Neoplasm is not in Slicer's general anatomy list: the DICOM master list has it
    assert SCHEMES["brats2021"].slicer_terminology(4).startswith("Segmentation category and type - DICOM master list~")
    assert SCHEMES["brain_tissue"].slicer_terminology(3) == (
        "Segmentation category and type - 3D Slicer General Anatomy list"
        "~SCT^123037004^Anatomical Structure~SCT^389080008^White Matter~^^"
        "~Anatomic codes - DICOM master list~^^~^^"
    )
    with pytest.raises(ConfigError):
        SCHEMES["brats2021"].slicer_terminology(3)


def test_tumour_regions_constant() -> None:
    assert [r.key for r in TUMOUR_REGIONS] == ["wt", "tc", "et"]
    wt, tc, et = (set(r.components) for r in TUMOUR_REGIONS)
    assert et < tc < wt and wt - tc == {"edema"}


@needs_data
def test_real_brats2013_labels_map_to_msd() -> None:
    sitk = pytest.importorskip("SimpleITK")
    path = DATA / "brats_flair_t1c" / "brats_2013_pat0003_1" / "OTMultiClass.nii.gz"
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))  # a copy: a view would outlive its image
    assert set(np.unique(labels).tolist()) <= set(SCHEMES["brats2013"].values)
    msd = map_labels(labels, "brats2013", "msd_task01")
    assert set(np.unique(msd).tolist()) <= set(SCHEMES["msd_task01"].values)
    for region in ("wt", "tc", "et"):
        assert np.array_equal(
            SCHEMES["msd_task01"].region_mask(msd, region), SCHEMES["brats2013"].region_mask(labels, region)
        )
