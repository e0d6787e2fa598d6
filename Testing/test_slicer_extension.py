"""The extension as Slicer builds and indexes it, the model registry, and the layering rules."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest
import tomllib

from conftest import REPO, modules_imported
from magms.devices import AUTO_ENGINE_REQUIREMENTS, REQUIREMENTS  # noqa: E402
from magms.errors import BundleError, ConfigError  # noqa: E402
from MAGMSCommonLib import models  # noqa: E402

MODULES = ("MAGMSSegmenter", "MAGMSTraining")
CATALOG_KEYS = {"$schema", "build_dependencies", "build_subdirectory", "category", "scm_revision", "scm_type", "scm_url", "tier"}


def _cmake_set(text: str, name: str) -> list[str]:
    match = re.search(rf"set\({name}\s+(.*?)\)", text, re.S)
    assert match, name
    return match.group(1).split()


def test_top_level_cmake_has_the_extension_metadata_and_modules():
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        assert re.search(rf'set\(EXTENSION_{key} "[^"]+"\)', text), key
    for line in ("find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})", "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
                 "include(${Slicer_EXTENSION_CPACK})"):
        assert line in text
    for module in MODULES:
        assert re.search(rf"^add_subdirectory\({module}\)", text, re.M), module
    # the icon and screenshot URLs point at files of this repository
    for url in re.findall(r"https://raw.githubusercontent.com/magms-developers/SlicerMAGMS/main/(\S+?)[\" ]", text):
        assert (REPO / url).is_file(), url


@pytest.mark.parametrize("module", MODULES)
def test_module_cmake_lists_every_script_and_resource_and_they_exist(module):
    folder = REPO / module
    text = (folder / "CMakeLists.txt").read_text(encoding="utf-8")
    scripts = [s.replace("${MODULE_NAME}", module) for s in _cmake_set(text, "MODULE_PYTHON_SCRIPTS")]
    resources = [s.replace("${MODULE_NAME}", module) for s in _cmake_set(text, "MODULE_PYTHON_RESOURCES")]
    for path in scripts + resources:
        assert (folder / path).is_file(), path
    on_disk = {str(p.relative_to(folder)) for p in folder.rglob("*.py") if "Testing" not in p.parts and "__pycache__" not in p.parts}
    assert on_disk == set(scripts), "scripts on disk and in CMake differ"
    assert "slicerMacroBuildScriptedModule" in text and "slicer_add_python_unittest" in text
    assert "magms/" not in text, "the core is installed in one place: MAGMSCommon/CMakeLists.txt"


def test_core_and_common_library_are_installed_once_every_file():
    text = (REPO / "MAGMSCommon" / "CMakeLists.txt").read_text(encoding="utf-8")
    core = set(_cmake_set(text, "MAGMS_CORE_PYTHON_SCRIPTS"))
    assert core == {str(p.relative_to(REPO)) for p in (REPO / "magms").rglob("*.py")}
    common = set(_cmake_set(text, "MAGMS_COMMON_PYTHON_SCRIPTS"))
    assert common == {str(p.relative_to(REPO / "MAGMSCommon")) for p in (REPO / "MAGMSCommon").rglob("*.py")
                      if "__pycache__" not in p.parts}
    assert text.count("ctkMacroCompilePythonScript(") == 2
    top = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    assert top.index("add_subdirectory(MAGMSCommon)") < top.index("add_subdirectory(MAGMSSegmenter)")


def test_the_builtin_models_files_are_installed_beside_the_core_package():
    """Exactly the index, the weights and magms.json of every model it names, and any other file of the
    models folder (a README, a licence), but nothing of a recipe/ folder; as RESOURCES of the core
    package, so that they land in qt-scripted-modules/Resources/Models beside `magms`, where
    magms.builtin looks. True before the weights are committed and after."""
    from magms.bundle import METADATA_FILE, WEIGHTS_FILE

    text = (REPO / "MAGMSCommon" / "CMakeLists.txt").read_text(encoding="utf-8")
    listed = _cmake_set(text, "MAGMS_BUILTIN_MODEL_FILES")
    models = REPO / "Resources" / "Models"
    index = json.loads((models / "models.json").read_text(encoding="utf-8"))
    expected = {"Resources/Models/models.json"}
    expected |= {f"Resources/Models/{m['folder']}/{name}" for m in index["models"] for name in (WEIGHTS_FILE, METADATA_FILE)}
    expected |= {p.relative_to(REPO).as_posix() for p in models.rglob("*")
                 if p.is_file() and "recipe" not in p.relative_to(models).parts and "__pycache__" not in p.parts
                 and not any(part.startswith(".") for part in p.relative_to(models).parts)}  # .engines: a run's graph cache
    assert sorted(listed) == sorted(expected) and len(listed) == len(set(listed))
    core_call = re.search(r"ctkMacroCompilePythonScript\(\s*TARGET_NAME MAGMSCorePackage(.*?)\)", text, re.S).group(1)
    assert 'RESOURCES "${MAGMS_BUILTIN_MODEL_RESOURCES}"' in core_call and "SOURCE_DIR ${CMAKE_CURRENT_SOURCE_DIR}/.." in core_call
    assert "foreach(file ${MAGMS_BUILTIN_MODEL_FILES})" in text  # a file not there yet is left out, not a build error


@pytest.mark.parametrize("module", MODULES)
def test_module_files_edit_no_import_path_and_training_needs_no_segmenter(module):
    source = (REPO / module / f"{module}.py").read_text(encoding="utf-8")
    # the one path edit: _useCheckoutFolders adds a checkout's MAGMSCommon/ and root when they lie beside the module's
    # folder (installed, nothing: test_the_modules_load_as_slicers_scripted_module_factory_loads_them)
    tree = ast.parse(source)
    outside = [node for node in tree.body if not (isinstance(node, ast.FunctionDef) and node.name == "_useCheckoutFolders")]
    assert "sys.path" not in "\n".join(ast.unparse(node) for node in outside) and "PYTHONPATH" not in source
    imported = _imports(REPO / module / f"{module}.py")
    assert not imported & ({"MAGMSSegmenter", "MAGMSSegmenterLib"} if module == "MAGMSTraining" else {"MAGMSTraining", "MAGMSTrainingLib"})


def test_catalog_entry_follows_the_current_schema_and_agrees_with_cmake():
    entry = json.loads((REPO / "MAGMS.json").read_text(encoding="utf-8"))
    assert set(entry) <= CATALOG_KEYS
    assert entry["$schema"].endswith("slicer-extension-catalog-entry-schema-v1.0.1.json#")
    cmake = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    assert entry["category"] == re.search(r'set\(EXTENSION_CATEGORY "([^"]+)"\)', cmake).group(1)
    assert entry["build_dependencies"] == re.search(r'set\(EXTENSION_DEPENDS "([^"]+)"\)', cmake).group(1).split()
    assert entry["scm_url"].startswith("https://github.com/") and entry["build_subdirectory"] == "."


def _wizard_modules(path: Path, depth: int = 1) -> list[str]:
    """The modules Slicer's Extension Wizard offers for ``path`` (Select Extension, or a folder dropped on Slicer):
    the rule of ``ModuleInfo.findModules`` (Modules/Scripted/ExtensionWizard/ExtensionWizardLib/ModuleInfo.py,
    the same at v5.8.1 and v5.10.0): a folder with an ``__init__.py`` is a library, not searched; each ``.py`` file
    whose class of the same name derives from ``ScriptedLoadableModule`` is a module; sub-folders to ``depth``."""
    found: list[str] = []
    entries = [] if (path / "__init__.py").is_file() else sorted(path.iterdir())
    if depth > 0:
        for entry in (e for e in entries if e.is_dir()):
            found += _wizard_modules(entry, depth - 1)
    for entry in (e for e in entries if e.is_file() and e.suffix == ".py"):
        try:
            tree = ast.parse(entry.read_text(encoding="utf-8"))
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name == entry.stem and \
                    "ScriptedLoadableModule" in [getattr(base, "id", None) for base in node.bases]:
                found.append(entry.stem)
    return found


def test_the_extension_wizard_offers_both_modules_and_nothing_else_from_the_checkout():
    assert sorted(_wizard_modules(REPO)) == sorted(MODULES)


def test_the_catalog_entry_passes_the_extensions_index_checks_that_run_offline():
    """The checks of Slicer/ExtensionsIndex scripts/check_description_files.py that need no network: the
    file named as the CMake project, not starting with "Slicer"; the repository name starting with "Slicer";
    LF line endings; a licence file at the top; the repository under 100 MB; image URLs of our own files."""
    raw = (REPO / "MAGMS.json").read_bytes()
    assert b"\r" not in raw
    entry = json.loads(raw)
    cmake = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    project = re.search(r"project\s*\(\s*([^\s\)]+)", cmake, re.I).group(1)
    assert project == "MAGMS" and not project.lower().startswith("slicer")
    repository = entry["scm_url"].rstrip("/").split("/")[-1].removesuffix(".git")
    assert repository.startswith("Slicer"), repository
    assert (REPO / "LICENSE").is_file()
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    size = sum((REPO / name.decode()).stat().st_size for name in tracked if name and (REPO / name.decode()).is_file())
    assert size < 100 * 2**20, f"{size / 2**20:.1f} MB"
    for key in ("ICONURL", "SCREENSHOTURLS"):
        urls = re.search(rf'set\s*\(EXTENSION_{key}\s*"([^"]+)"', cmake).group(1).split()
        assert urls and all(url.startswith("https://") and url.endswith((".png", ".jpg", ".jpeg", ".gif")) for url in urls)


# What the code does with a widget, by the end of its name -> the classes that can do it.
_EXPECTED_CLASS = (
    ("PathLineEdit", {"ctkPathLineEdit"}), ("LineEdit", {"QLineEdit"}), ("DoubleSpinBox", {"QDoubleSpinBox", "ctkDoubleSpinBox"}),
    ("SpinBox", {"QSpinBox", "QDoubleSpinBox"}), ("NodeComboBox", {"qMRMLNodeComboBox"}), ("ComboBox", {"QComboBox"}),
    ("RadioButton", {"QRadioButton"}), ("CheckBox", {"QCheckBox"}), ("CollapsibleButton", {"ctkCollapsibleButton"}),
    ("Button", {"QPushButton"}),
    ("ProgressBar", {"QProgressBar"}), ("Label", {"QLabel"}), ("Text", {"QPlainTextEdit"}), ("Table", {"QTableWidget"}),
    ("PlotWidget", {"qMRMLPlotWidget"}), ("FormLayout", {"QFormLayout"}),
)


def _ui(module: str) -> dict[str, tuple[str, ET.Element]]:
    tree = ET.parse(REPO / module / "Resources" / "UI" / f"{module}.ui")
    found = {w.get("name"): (w.get("class"), w) for w in tree.iter("widget")}
    return found | {lay.get("name"): (lay.get("class"), lay) for lay in tree.iter("layout")}


@pytest.mark.parametrize("module", MODULES)
def test_widget_uses_only_widgets_the_ui_file_has_with_the_expected_class(module):
    ui = _ui(module)
    source = (REPO / module / f"{module}.py").read_text(encoding="utf-8")
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    assert used and used <= set(ui), used - set(ui)
    for name in used:
        expected = next(classes for suffix, classes in _EXPECTED_CLASS if name.lower().endswith(suffix.lower()))
        assert ui[name][0] in expected, (name, ui[name][0], expected)
    ast.parse(source)  # at least valid Python; it runs inside Slicer only
    assert "SlicerParameterName" not in (REPO / module / "Resources" / "UI" / f"{module}.ui").read_text(encoding="utf-8")


def _number(element: ET.Element, name: str):
    prop = next((p for p in element.iter("property") if p.get("name") == name), None)
    return None if prop is None else float(next(iter(prop)).text)


def test_every_number_of_the_training_panel_has_the_range_of_its_magms_train_option():
    from magms.commands import TrainOptions
    from magms.typehints import field_types, split_optional, tuple_item
    from MAGMSTrainingLib.controller import NUMBERS, numberRange

    ui = _ui("MAGMSTraining")
    widgets = {"epochs": "epochsSpinBox", "max_minutes": "minutesSpinBox", "patch": "patchSpinBox",
               "kl_weight": "klWeightSpinBox", "feature_weight": "featureWeightSpinBox"}
    assert set(widgets) == set(NUMBERS)
    types = field_types(TrainOptions)
    for option, widget in widgets.items():
        low, high = numberRange(option)
        assert low is not None and high is not None, f"{option} has no range"
        cls, element = ui[widget]
        assert (_number(element, "minimum") or 0.0, _number(element, "maximum")) == (low, high), option
        kind, _ = split_optional(types[option])
        kind = tuple_item(kind) if getattr(kind, "__origin__", None) is tuple else kind
        assert cls == ("QSpinBox" if kind is int else "QDoubleSpinBox"), (option, cls)


def test_the_folders_are_browsed_as_folders_and_the_plot_gets_the_scene():
    ui = _ui("MAGMSTraining")
    for name in ("dataPathLineEdit", "outPathLineEdit", "initPathLineEdit"):
        filters = next(p for p in ui[name][1].iter("property") if p.get("name") == "filters")
        assert ("ctkPathLineEdit::Dirs" in ET.tostring(filters, encoding="unicode")
                and "Files" not in ET.tostring(filters, encoding="unicode")), name
    tree = ET.parse(REPO / "MAGMSTraining" / "Resources" / "UI" / "MAGMSTraining.ui")
    connections = {(c.findtext("sender"), c.findtext("signal"), c.findtext("receiver"), c.findtext("slot"))
                   for c in tree.iter("connection")}
    assert ("MAGMSTraining", "mrmlSceneChanged(vtkMRMLScene*)", "plotWidget", "setMRMLScene(vtkMRMLScene*)") in connections


def test_the_segmenters_export_section_gets_the_scene_and_browses_a_folder():
    """The segmentation selector is a qMRMLNodeComboBox of segmentations that gets the scene through the
    .ui connection, as the scripted-module template's selectors do; the output is a folder."""
    ui = _ui("MAGMSSegmenter")
    cls, selector = ui["exportSegmentationNodeComboBox"]
    assert cls == "qMRMLNodeComboBox"
    types = next(p for p in selector.iter("property") if p.get("name") == "nodeTypes")
    assert [t.text for t in types.iter("string")] == ["vtkMRMLSegmentationNode"]
    filters = next(p for p in ui["exportFolderPathLineEdit"][1].iter("property") if p.get("name") == "filters")
    assert "ctkPathLineEdit::Dirs" in ET.tostring(filters, encoding="unicode") and "Files" not in ET.tostring(filters, encoding="unicode")
    tree = ET.parse(REPO / "MAGMSSegmenter" / "Resources" / "UI" / "MAGMSSegmenter.ui")
    connections = {(c.findtext("sender"), c.findtext("signal"), c.findtext("receiver"), c.findtext("slot"))
                   for c in tree.iter("connection")}
    assert ("MAGMSSegmenter", "mrmlSceneChanged(vtkMRMLScene*)", "exportSegmentationNodeComboBox",
            "setMRMLScene(vtkMRMLScene*)") in connections
    assert {c.findtext("class") for c in tree.iter("customwidget")} >= {"qMRMLNodeComboBox", "ctkPathLineEdit", "ctkCollapsibleButton"}
    # each export handler is one call into the controller
    source = (REPO / "MAGMSSegmenter" / "MAGMSSegmenter.py").read_text(encoding="utf-8")
    for call in ("export.setExportSegmentation", "export.setExportFormat", "export.setExportFolder",
                 "export.exportOrCancel(dependencies.ensureDicomInSlicer)", "setImagesPrepared",
                 "applyOrCancel(dependencies.ensureForSegmentation)"):
        assert f"self.controller.{call}" in source, call
    # issue #16: the box and the detection beside it, unchecked by default (--preprocess auto)
    cls, box = ui["imagesPreparedCheckBox"]
    assert cls == "QCheckBox" and "My images are already skull-stripped and aligned" in ET.tostring(box, encoding="unicode")
    assert "checked" not in {p.get("name") for p in box.iter("property")}
    assert ui["preprocessLabel"][0] == "QLabel"


def test_dicom_requirements_match_the_dicom_extra():
    from packaging.markers import Marker

    from magms.devices import DICOM_REQUIREMENTS

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    # the entries whose environment marker holds on this Python, without the marker
    here = [spec.split(";")[0].strip() for spec in project["optional-dependencies"]["dicom"]
            if ";" not in spec or Marker(spec.split(";", 1)[1]).evaluate()]
    assert [r.spec for r in DICOM_REQUIREMENTS] == here
    assert [r.project for r in DICOM_REQUIREMENTS][:3] == ["pydicom", "highdicom", "rt-utils"]


def test_the_extension_has_the_licence_the_package_declares():
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0" in text
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == {"text": "Apache-2.0"}


@pytest.mark.parametrize("module", MODULES)
def test_self_tests_install_and_train_only_when_asked(module, monkeypatch):
    """The extension build machines run the self-tests with every dialog answered: no install there."""
    import types

    tree = ast.parse((REPO / module / f"{module}.py").read_text(encoding="utf-8"))
    run_test = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "runTest")
    assert "runSelfTests" in ast.unparse(run_test) and "ensureDependencies" not in ast.unparse(run_test)
    # CTest's loader runs every test_* method, not runTest: each heavy one must skip unless asked for
    test_class = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == f"{module}Test")
    methods = [n for n in test_class.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test")]
    assert "test_panel_opens_without_torch" in [m.name for m in methods]
    for method in methods:
        if method.name != "test_panel_opens_without_torch":
            assert any("skipUnless(heavySelfTestsWanted()" in ast.unparse(d) for d in method.decorator_list), method.name
    from MAGMSCommonLib import widgets

    ran, shown = [], []
    fake_util = types.SimpleNamespace(selectModule=lambda name: None)
    monkeypatch.setattr(widgets, "slicer", types.SimpleNamespace(util=fake_util, mrmlScene=types.SimpleNamespace(Clear=lambda: None)))
    test = types.SimpleNamespace(assertEqual=lambda a, b, msg=None: None, delayDisplay=shown.append)
    monkeypatch.delenv(widgets.HEAVY_SELF_TESTS, raising=False)
    widgets.runSelfTests(test, module, heavy=lambda: ran.append(True))
    assert ran == [] and "Heavy test skipped" in shown[0]
    monkeypatch.setenv(widgets.HEAVY_SELF_TESTS, "1")
    widgets.runSelfTests(test, module, heavy=lambda: ran.append(True))
    assert ran == [True]


def _imports(path) -> set[str]:
    """Every module a file imports, as written (``a.b`` for ``from a.b import c``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and n.level == 0}
    return names | {name.split(".")[0] for name in names}


def _core_files(package: str):
    return [p for p in (REPO / "magms" / package).rglob("*.py")] if package else list((REPO / "magms").rglob("*.py"))


@pytest.mark.parametrize("folder", [f"{m}/{m}Lib" for m in MODULES] + ["MAGMSCommon/MAGMSCommonLib"])
def test_slicer_logic_never_imports_qt(folder):
    for path in (REPO / folder).glob("*.py"):
        if path.name == "widgets.py":  # the widget layer's shared helpers, imported by the module files only
            continue
        assert not _imports(path) & {"qt", "ctk", "slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper"}, path
        assert "MAGMSCommonLib.widgets" not in _imports(path), path


def test_core_never_imports_slicer_vtk_qt_and_data_never_imports_training_or_inference():
    for path in _core_files(""):
        assert not _imports(path) & {"slicer", "vtk", "qt", "ctk", "MAGMSCommonLib"}, path
    for path in _core_files("data"):
        assert not {n for n in _imports(path) if n.startswith(("magms.training", "magms.inference", "magms.evaluate", "magms.cli"))}, path
    for path in _core_files("training"):
        assert not {n for n in _imports(path) if n.startswith("magms.inference")}, path
    for path in _core_files("inference"):
        assert not {n for n in _imports(path) if n.startswith("magms.training")}, path


def test_what_the_slicer_side_reads_imports_no_torch():
    """The modules read the options, the protocol and bundle metadata before torch may be installed."""
    code = ("import magms.commands, magms.protocol, magms.bundle, magms.builtin, magms.options, magms.data.geometry, magms.data.skull, "
            "magms.modalities, magms.labels, magms.files, magms.devices")
    assert modules_imported(code, ("torch", "monai", "SimpleITK")) == []


def test_runtime_requirements_match_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    # the fast path auto takes is installed by default (its wheels exist for every platform Slicer runs on)
    assert [r.spec for r in REQUIREMENTS + AUTO_ENGINE_REQUIREMENTS] == project["dependencies"]


# ---------------------------------------------------------------------------------------------
# model registry


def test_shipped_registry_reads():
    models.readRegistry(REPO / "MAGMSSegmenter" / "Resources" / "Models.json")


@pytest.fixture
def zipped_bundle(tmp_path):
    from conftest import make_bundle
    from magms.config import PreprocessConfig

    folder = make_bundle(tmp_path / "src" / "tiny", "msd_task01", slots=("flair",), seed=None,
                         preprocessing=PreprocessConfig(patch_size=(16, 16, 16)))
    archive = tmp_path / "tiny.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in folder.iterdir():
            zf.write(path, f"tiny/{path.name}")
    return archive, hashlib.sha256(archive.read_bytes()).hexdigest()


def _registry(tmp_path, url: str, sha: str) -> list[models.ModelEntry]:
    path = tmp_path / "Models.json"
    path.write_text(json.dumps({"models": [{"name": "tiny", "version": "1.0", "url": url, "sha256": sha, "description": "test"}]}))
    return models.readRegistry(path)


def test_download_is_verified_cached_and_reused(zipped_bundle, tmp_path):
    from magms.bundle import load_bundle

    archive, sha = zipped_bundle
    entry = _registry(tmp_path, archive.as_uri(), sha)[0]
    cache = tmp_path / "cache"
    folder = models.fetchModel(entry, cache)
    assert folder == cache / "tiny-v1.0"
    load_bundle(folder)
    archive.unlink()  # a second fetch must not download again
    assert models.fetchModel(entry, cache) == folder
    assert [p.name for p in cache.iterdir()] == ["tiny-v1.0"]


def test_a_download_with_another_sha256_is_refused_and_nothing_kept(zipped_bundle, tmp_path):
    archive, sha = zipped_bundle
    entry = _registry(tmp_path, archive.as_uri(), "0" * 64)[0]
    cache = tmp_path / "cache"
    with pytest.raises(BundleError, match="differs from 000000000000... in the registry"):
        models.fetchModel(entry, cache)
    assert list(cache.iterdir()) == []


def test_registry_errors_name_the_entry(tmp_path):
    path = tmp_path / "Models.json"
    path.write_text(json.dumps({"models": [{"name": "x", "version": "1", "url": "u", "description": "d"}]}))
    with pytest.raises(ConfigError, match="model 0 lacks sha256"):
        models.readRegistry(path)
    path.write_text(json.dumps({"models": [{"name": "x", "version": "1", "url": "u", "sha256": "abc", "description": "d"}]}))
    with pytest.raises(ConfigError, match="'x': sha256 must be 64 hex digits"):
        models.readRegistry(path)


# ---------------------------------------------------------------------------------------------
# dependencies and devices, as the module shows them


def _installed(monkeypatch, **versions):
    """Pretend these versions are installed (None: missing); the others as they are."""
    import magms.devices

    real = magms.devices.installed_versions()
    monkeypatch.setattr(magms.devices, "installed_versions", lambda: {**real, **versions})


def test_missing_dependencies_are_listed_with_their_pip_specifiers(monkeypatch):
    from MAGMSCommonLib import dependencies

    _installed(monkeypatch, torch=None, monai=None)
    missing = dependencies.unmet()
    assert [s.requirement.module for s in missing] == ["torch", "monai"]
    text = dependencies.describeUnmet(missing, extension=True)
    assert "torch>=2.4,<2.14" in text and "monai>=1.4,<1.7" in text and "PyTorch extension" in text and "Install them now?" in text


def test_missing_dicom_export_packages_are_listed_and_installed_with_the_dicom_extras_specifiers(monkeypatch):
    from MAGMSCommonLib import dependencies

    _installed(monkeypatch, rt_utils=None, highdicom="0.20.0")
    for module in ("highdicom", "rt_utils"):  # as in Slicer, which never imports them (other tests here may have)
        monkeypatch.delitem(sys.modules, module, raising=False)
    states = dependencies.unmetDicom()
    assert [(s.requirement.module, s.installed) for s in states] == [("highdicom", "0.20.0"), ("rt_utils", None)]
    assert dependencies.unmet() == []  # segmenting needs none of them
    text = dependencies.describeUnmetDicom(states, versions={"pydicom": "2.4.4", "numpy": "2.0.2", "pillow": "11.2.1", "torch": None})
    assert "highdicom>=0.22: 0.20.0 is installed, which is outside that range" in text and "rt-utils>=1.2.7: not installed" in text
    assert "pip: 'highdicom>=0.22' 'rt-utils>=1.2.7'" in text and "Install them now?" in text
    assert "pip is told to keep Slicer's own numpy==2.0.2, pydicom==2.4.4, pillow==11.2.1 as they are" in text
    assert "No restart is needed: the export runs in a separate process." in text
    pip = _recordingPip()
    dependencies.installInSlicer(states, pipInstall=pip,
                                 versions=lambda: {"numpy": "2.0.2", "pydicom": "2.4.4", "pillow": None, "torch": None})
    assert pip.calls == [(["highdicom>=0.22", "rt-utils>=1.2.7"], ["numpy==2.0.2", "pydicom==2.4.4"])]  # exactly pyproject's dicom extra
    # only what the chosen objects need
    assert [s.requirement.module for s in dependencies.unmetDicom(("seg",))] == ["highdicom"]
    assert [s.requirement.module for s in dependencies.unmetDicom(("rtstruct",))] == ["rt_utils"]


class _Settings:
    """The part of qt.QSettings the offer uses; like an ini file, it gives values back as strings."""

    def __init__(self) -> None:
        self.values = {}

    def value(self, key):
        return self.values.get(key)

    def setValue(self, key, value) -> None:
        self.values[key] = str(value).lower()


def test_the_fast_cpu_packages_are_offered_once_and_a_no_is_remembered(monkeypatch):
    from MAGMSCommonLib import dependencies

    _installed(monkeypatch, openvino=None, onnx="1.14.0")
    for module in ("openvino", "onnx"):  # as in Slicer, which never imports them (other tests here may have)
        monkeypatch.delitem(sys.modules, module, raising=False)
    states = dependencies.unmetFast()
    assert [(s.requirement.spec, s.installed) for s in states] == [("openvino>=2024.0", None), ("onnx>=1.15", "1.14.0")]
    assert dependencies.unmet() == []  # segmenting needs neither: they are offered, not required
    questions, settings, versions = [], _Settings(), lambda: {"numpy": "1.26.4", "pydicom": None, "pillow": None, "torch": "2.6.0"}
    pip = _recordingPip()
    no = lambda text: questions.append(text) or False  # noqa: E731
    assert dependencies.offerFast(states, no, settings, pipInstall=pip, versions=versions) is False
    assert "three times faster with OpenVINO" in questions[0] and "onnx>=1.15: 1.14.0 is installed, which is outside" in questions[0]
    assert f"slicer.app.userSettings().remove('{dependencies.FAST_DECLINED_KEY}')" in questions[0] and pip.calls == []
    assert settings.values == {dependencies.FAST_DECLINED_KEY: "true"}
    yes = lambda text: questions.append(text) or True  # noqa: E731
    assert dependencies.offerFast(states, yes, settings, pipInstall=pip, versions=versions) is False
    assert len(questions) == 1 and pip.calls == []  # declined before: not asked again
    assert dependencies.offerFast(states, yes, _Settings(), pipInstall=pip, versions=versions) is False  # no restart
    assert pip.calls == [(["openvino>=2024.0", "onnx>=1.15"], ["numpy==1.26.4", "torch==2.6.0"])]  # Slicer's numpy and torch kept
    assert dependencies.offerFast([], yes, _Settings(), pipInstall=pip, versions=versions) is False and len(pip.calls) == 1


class _recordingPip:
    """Records each pip call as (requirements, the lines of its -c constraints file, read while pip would run)."""

    def __init__(self, change=None) -> None:
        self.calls, self.change = [], change

    def __call__(self, args):
        args = list(args)
        constraints = []
        if args[:1] == ["-c"]:
            with open(args[1], encoding="utf-8") as file:
                constraints = file.read().split()
            args = args[2:]
        self.calls.append((args, constraints))
        if self.change:
            self.change()


def test_a_dicom_install_keeps_slicers_pydicom_and_asks_for_a_restart_when_a_loaded_package_changed_all_the_same(monkeypatch):
    """Finding 2: Slicer 5.8 and 5.10 ship pydicom 2.4.4 and their DICOM plugins import it; highdicom>=0.22 resolved
    to 0.28, which needs pydicom 3, so pip upgraded pydicom under the running Slicer, and the restart flag was dropped.
    A constraint keeps it (pip then takes highdicom 0.22, the newest for pydicom 2), and a change is a restart."""
    from magms.devices import DICOM_REQUIREMENTS, RequirementState
    from MAGMSCommonLib import dependencies

    highdicom = RequirementState(DICOM_REQUIREMENTS[1], None)
    monkeypatch.delitem(sys.modules, "highdicom", raising=False)  # as in Slicer, which never imports it
    installed = {"numpy": "1.26.4", "pydicom": "2.4.4", "pillow": "11.2.1", "torch": "2.6.0"}
    assert dependencies.keptConstraints([highdicom], installed) == ["numpy==1.26.4", "pydicom==2.4.4", "pillow==11.2.1", "torch==2.6.0"]
    # a package MAGMS itself needs in another version is not held back
    old_pydicom = RequirementState(DICOM_REQUIREMENTS[0], "2.3.0")
    assert dependencies.keptConstraints([old_pydicom, highdicom], installed) == ["numpy==1.26.4", "pillow==11.2.1", "torch==2.6.0"]
    assert dependencies.keptConstraints([highdicom], {"numpy": "2.0.2", "pydicom": None, "pillow": None, "torch": None}) == ["numpy==2.0.2"]
    # the message says so, and asks for a restart when Slicer has loaded the package to be replaced
    monkeypatch.setitem(sys.modules, "pydicom", sys.modules.get("pydicom") or __import__("types").ModuleType("pydicom"))
    text = dependencies.describeUnmetDicom([old_pydicom, highdicom], versions=installed)
    assert "Install them now? Slicer has loaded pydicom already: it must restart afterwards." in text and "No restart" not in text
    versions = dict(installed)
    pip = _recordingPip()
    assert dependencies.installInSlicer([old_pydicom, highdicom], pipInstall=pip, versions=lambda: dict(versions)) is True
    assert pip.calls == [(["pydicom>=2.4", "highdicom>=0.22"], ["numpy==1.26.4", "pillow==11.2.1", "torch==2.6.0"])]
    # nothing loaded among the states, but a loaded package changed anyway (another package's requirement): restart
    monkeypatch.setitem(sys.modules, "numpy", sys.modules["numpy"])
    pip = _recordingPip(change=lambda: versions.update(numpy="2.0.2"))
    assert dependencies.installInSlicer([highdicom], pipInstall=pip, versions=lambda: dict(versions)) is True
    versions["numpy"] = "1.26.4"
    assert dependencies.installInSlicer([highdicom], pipInstall=_recordingPip(), versions=lambda: dict(versions)) is False


def test_brain_extraction_is_asked_for_with_the_brain_extras_specifier(monkeypatch):
    from magms.devices import BRAIN_REQUIREMENTS
    from MAGMSCommonLib import dependencies

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert [r.spec for r in BRAIN_REQUIREMENTS] == project["optional-dependencies"]["brain"]
    _installed(monkeypatch, deepbet=None)
    states = dependencies.unmetBrain()
    assert [s.requirement.spec for s in states] == ["deepbet>=1.0.2"] and dependencies.unmet() == []
    text = dependencies.describeUnmet(states, extension=True)
    assert "deepbet>=1.0.2: not installed" in text and "your PyTorch stays as it is" in text
    pip = _recordingPip()
    dependencies.installInSlicer(states, pipInstall=pip,
                                 versions=lambda: {"numpy": "1.26.4", "pydicom": None, "pillow": None, "torch": "2.6.0"})
    assert pip.calls == [(["deepbet>=1.0.2"], ["numpy==1.26.4", "torch==2.6.0"])]  # pip never swaps the torch the extension chose


def test_a_torch_outside_the_tested_range_is_unmet_and_never_replaced_by_pip(monkeypatch):
    from MAGMSCommonLib import dependencies

    _installed(monkeypatch, torch="2.1.2", monai="1.3.0")
    states = dependencies.unmet()
    assert [(s.requirement.module, s.installed) for s in states] == [("torch", "2.1.2"), ("monai", "1.3.0")]
    text = dependencies.describeUnmet(states, extension=True)
    assert "PyTorch 2.1.2 is installed, but MAGMS is tested with torch>=2.4,<2.14" in text and "PyTorch Utils" in text
    assert "Install them now?" not in text
    calls = []
    with pytest.raises(ConfigError, match="PyTorch Utils module"):
        dependencies.installInSlicer(states, pipInstall=calls.append, installTorch=calls.append)
    assert calls == []


def test_without_the_pytorch_extension_torch_is_not_installed_with_pip(monkeypatch):
    from MAGMSCommonLib import dependencies

    _installed(monkeypatch, torch=None)
    monkeypatch.setattr(dependencies, "pyTorchExtensionPresent", lambda: False)
    states = dependencies.unmet()
    assert "install 'PyTorch' in the Extensions Manager" in dependencies.describeUnmet(states)
    pip = []
    with pytest.raises(ConfigError, match="Extensions Manager"):
        dependencies.installInSlicer(states, pipInstall=pip.append)
    assert pip == []


def test_torch_through_the_extension_and_the_rest_pinned_through_pip(monkeypatch):
    from MAGMSCommonLib import dependencies

    _installed(monkeypatch, torch=None, monai=None)
    torch_specs, pip = [], _recordingPip()
    versions = {"numpy": "2.0.2", "pydicom": None, "pillow": None, "torch": None}
    restart = dependencies.installInSlicer(dependencies.unmet(), pipInstall=pip,
                                           installTorch=lambda spec: torch_specs.append(spec) or versions.update(torch="2.6.0") or "torch",
                                           versions=lambda: dict(versions))
    assert torch_specs == [">=2.4,<2.14"] and pip.calls == [(["monai>=1.4,<1.7"], ["numpy==2.0.2", "torch==2.6.0"])]
    assert restart == any(m in sys.modules for m in ("torch", "monai"))  # an imported package needs a restart


def test_devices_say_what_was_found(monkeypatch):
    import torch

    import magms.devices

    devices = magms.devices.describe_devices()
    assert devices[-1].key == "cpu"
    if not torch.cuda.is_available():
        assert devices == [magms.devices.Device("cpu", f"CPU (no CUDA device found), {torch.get_num_threads()} threads")]
    else:
        assert all(d.key.startswith("cuda:") and "GiB" in d.description for d in devices[:-1])
    monkeypatch.setattr(magms.devices.importlib.util, "find_spec", lambda name: None)
    assert magms.devices.describe_devices() == [magms.devices.Device("cpu", "CPU (PyTorch is not installed yet)")]


# ---------------------------------------------------------------------------------------------
# the Pythons of the supported Slicer versions

SLICER_PYTHONS = {"5.8": "3.9", "5.10": "3.12"}
# What the Slicer side imports from the core and MAGMSCommonLib before torch may be installed.
TORCH_FREE = ("magms.commands", "magms.options", "magms.config", "magms.bundle", "magms.builtin", "magms.labels", "magms.modalities",
              "magms.protocol", "magms.files", "magms.devices", "magms.data.geometry", "magms.data.skull", "magms.errors", "magms.cli",
              "magms.targets", "MAGMSCommonLib.runner", "MAGMSCommonLib.signal", "MAGMSCommonLib.models", "MAGMSCommonLib.dependencies",
              "MAGMSCommonLib.child")


def _python(version: str):
    import os
    import shutil
    from pathlib import Path

    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = sorted(root.glob(f"{version}.*/bin/python{version}"), key=lambda p: [int(x) for x in p.parts[-3].split(".")])
    return str(found[-1]) if found else shutil.which(f"python{version}")


@pytest.fixture(scope="module")
def numpy_only_python(tmp_path_factory):
    """Slicer's Python before MAGMS installed anything: a venv of that version with numpy only, one per version."""
    import subprocess

    made: dict[str, str] = {}

    def make(slicer_version: str) -> str:
        version = SLICER_PYTHONS[slicer_version]
        if version not in made:
            python = _python(version)
            if python is None:
                pytest.skip(f"no Python {version} (Slicer {slicer_version}'s) on this machine")
            venv = tmp_path_factory.mktemp(f"venv{version}")
            subprocess.run([python, "-m", "venv", str(venv)], check=True)
            pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "numpy"], capture_output=True, text=True)
            if pip.returncode != 0:
                pytest.skip(f"numpy could not be installed for Python {version}: {pip.stderr.strip().splitlines()[-1:]}")
            made[version] = str(venv / "bin" / "python")
        return made[version]

    return make


@pytest.mark.slow
@pytest.mark.parametrize("slicer_version", SLICER_PYTHONS)
def test_slicer_side_compiles_and_imports_on_the_python_of_slicer(slicer_version, tmp_path, numpy_only_python):
    import subprocess

    version = SLICER_PYTHONS[slicer_version]
    python = _python(version)
    if python is None:
        pytest.skip(f"no Python {version} (Slicer {slicer_version}'s) on this machine")
    files = [p for folder in ("magms", "MAGMSCommon", "MAGMSSegmenter", "MAGMSTraining") for p in (REPO / folder).rglob("*.py")]
    compile_all = "import sys\nfor path in sys.argv[1:]:\n    compile(open(path, encoding='utf-8').read(), path, 'exec')"
    result = subprocess.run([python, "-c", compile_all, *map(str, files)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    # the torch-free imports, in a fresh environment with numpy only (as before the dependencies are installed)
    venv_python = numpy_only_python(slicer_version)
    code = (f"import sys, importlib\nfor name in {TORCH_FREE!r}: importlib.import_module(name)\n"
            "heavy = [m for m in ('torch', 'monai', 'SimpleITK') if m in sys.modules]\nassert not heavy, heavy\n"
            "from magms.commands import TrainOptions\n"
            "TrainOptions.from_dict({'data': 'd', 'labels': 'brats2013', 'out': 'o', 'max_minutes': 3, 'slots': ['flair']})")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{REPO}:{REPO / 'MAGMSCommon'}"}
    result = subprocess.run([venv_python, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    # the MRML side (logic and controllers) runs its module-level code on this Python too: slicer-core has no
    # wheel for 3.9, so `slicer` and `vtk` are stand-ins whose every attribute is a class; what is checked is
    # Python itself (annotations, dataclasses, syntax evaluated at import), not Slicer's API (test_slicer_api.py)
    stubs = tmp_path / "stubs"
    for name in ("slicer", "vtk", "vtk/util"):  # vtk.util.numpy_support: VTK's Python helpers, in Slicer's VTK
        (stubs / name).mkdir(parents=True)
        (stubs / name / "__init__.py").write_text(STAND_IN_MODULE, encoding="utf-8")
    env["PYTHONPATH"] += f":{REPO / 'MAGMSSegmenter'}:{REPO / 'MAGMSTraining'}:{stubs}"
    code = f"import importlib\nfor name in {MRML_SIDE!r}: importlib.import_module(name)\n"
    result = subprocess.run([venv_python, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]


#: The Slicer-side modules below the widgets: they import ``slicer`` and ``vtk`` (MRML), not Qt.
MRML_SIDE = ("MAGMSCommonLib.volumes", "MAGMSCommonLib.segments", "MAGMSCommonLib.childjob", "MAGMSCommonLib.parameters",
             "MAGMSCommonLib.devicelist",
             "MAGMSSegmenterLib.logic", "MAGMSSegmenterLib.controller", "MAGMSSegmenterLib.targets", "MAGMSTrainingLib.logic",
             "MAGMSTrainingLib.controller")
STAND_IN_MODULE = """
class _Any(type):
    def __getattr__(cls, name):
        return _Any(name, (), {})

    def __call__(cls, *args, **kwargs):
        return cls


def __getattr__(name):
    return _Any(name, (), {})
"""


#: The Slicer application's own modules, played in a fresh interpreter: every attribute is a class (bases
#: of the module classes included), so that what runs is the module file's own import-time code.
SLICER_STAND_INS = r"""
import importlib.abc, importlib.machinery, sys, types


class _Any(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Any(name, (), {})

    def __call__(cls, *args, **kwargs):
        return cls


class _StandIns(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("slicer", "qt", "ctk", "vtk", "SampleData"):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__getattr__ = lambda name: _Any(name, (), {})
        return module

    def exec_module(self, module):
        pass


sys.meta_path.insert(0, _StandIns())
"""
#: How each release executes a scripted module's file (qSlicerScriptedUtils::loadSourceAsModule).
LOAD_SOURCE = {
    "5.8": "import imp; imp.load_source({name!r}, {path!r})",  # v5.8.1, Base/QTCore/qSlicerScriptedUtils.cxx:45
    "5.10": ("import importlib.util; spec = importlib.util.spec_from_file_location({name!r}, {path!r}); "  # v5.10.0, :43
             "module = importlib.util.module_from_spec(spec); sys.modules[{name!r}] = module; spec.loader.exec_module(module)"),
}


def _installed_layout(root: Path) -> Path:
    """The Python files as the extension installs them: modules, their Lib folders, MAGMSCommonLib and the core,
    all in one ``qt-scripted-modules`` folder (slicerMacroBuildScriptedModule and ctkMacroCompilePythonScript)."""
    import shutil

    folder = root / "lib" / "Slicer-5.8" / "qt-scripted-modules"
    folder.mkdir(parents=True)
    for module in MODULES:
        shutil.copy(REPO / module / f"{module}.py", folder)
        shutil.copytree(REPO / module / f"{module}Lib", folder / f"{module}Lib")
    shutil.copytree(REPO / "MAGMSCommon" / "MAGMSCommonLib", folder / "MAGMSCommonLib")
    shutil.copytree(REPO / "magms", folder / "magms")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["checkout", "installed"])
@pytest.mark.parametrize("slicer_version", SLICER_PYTHONS)
def test_the_modules_load_as_slicers_scripted_module_factory_loads_them(slicer_version, layout, numpy_only_python, tmp_path):
    """Slicer loads a scripted module from a folder (Extension Wizard's Select Extension, Additional module paths,
    or the installed extension): its factory appends the MODULE's folder to sys.path (ctkFactoryScriptedItem::load,
    Base/QTGUI/qSlicerScriptedLoadableModuleFactory.cxx:49-59 at v5.8.1 and v5.10.0), then executes the module
    file. Here: a fresh, isolated interpreter of that release's Python (numpy only, no torch), sys.path = its own
    plus those folders, the module files executed as that release does. From a checkout they must import
    MAGMSCommonLib and the core from the checkout; installed, from the install folder, adding no path."""
    import subprocess

    if layout == "checkout":
        folders, expected = {module: REPO / module for module in MODULES}, REPO
    else:
        installed = _installed_layout(tmp_path / "Slicer")
        folders, expected = {module: installed for module in MODULES}, installed
    lines = [SLICER_STAND_INS, "from pathlib import Path"]
    lines += [f"sys.path.append({str(folder)!r})" for folder in dict.fromkeys(folders.values())]  # every module registered first
    lines.append("before = list(sys.path)")
    for module, folder in folders.items():
        lines.append(LOAD_SOURCE[slicer_version].format(name=module, path=str(folder / f"{module}.py")))
        lines.append(f"assert hasattr(sys.modules[{module!r}], {module + 'Widget'!r})")
    lines += ["import MAGMSCommonLib, magms, MAGMSSegmenterLib.logic, MAGMSTrainingLib.logic",
              f"for m in (MAGMSCommonLib, magms): assert str(Path(m.__file__).resolve()).startswith({str(expected)!r}), m.__file__",
              "heavy = [m for m in ('torch', 'monai', 'SimpleITK') if m in sys.modules]",
              "assert not heavy, heavy",
              "print('added', [p for p in sys.path if p not in before])",
              "print('loaded', sorted(m for m in sys.modules if m.startswith(('MAGMS', 'magms'))))"]
    result = subprocess.run([numpy_only_python(slicer_version), "-I", "-c", "\n".join(lines)], capture_output=True, text=True,
                            cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "'MAGMSSegmenter'" in result.stdout and "'MAGMSTraining'" in result.stdout
    added = result.stdout.splitlines()[0]
    if layout == "installed":
        assert added == "added []", added
    else:
        assert str(REPO / "MAGMSCommon") in added and f"'{REPO}'" in added, added


def test_the_child_python_is_slicers_launcher_when_it_is_on_the_path(tmp_path, monkeypatch):
    """Inside Slicer, sys.executable is the PythonSlicer launcher already (qSlicerCoreApplication sets
    it); PythonSlicer on PATH, as slicer.util runs Python modules, is preferred all the same."""
    from MAGMSCommonLib.child import childEnvironment, childPython

    launcher = tmp_path / "PythonSlicer"
    launcher.write_text("#!/bin/sh\n")
    launcher.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert childPython() == str(launcher)
    assert childEnvironment()["PYTHONPATH"].split(os.pathsep)[0] == str(REPO)
