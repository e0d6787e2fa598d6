"""Widget helpers both module files use. They need the Slicer application: the logic never imports this."""

from __future__ import annotations

import os
import sys
import unittest
from collections.abc import Callable

import slicer

from MAGMSCommonLib.volumes import NOT_IMAGE_VOLUME_TYPES

#: Installing PyTorch and MONAI and running a network is not for the extension build machines, whose
#: ``--testing`` runs answer every dialog: the heavy self-tests run only when this is "1".
HEAVY_SELF_TESTS = "MAGMS_HEAVY_SELF_TESTS"

__all__ = ["ControllerPanel", "volumeSelector", "fillComboBox", "builtinModelsOrWarning", "HEAVY_SELF_TESTS", "heavySelfTestsWanted",
           "runSelfTests", "checkPanelOpensWithoutTorch"]


class ControllerPanel:
    """The life cycle both panels share; listed first among a widget's bases, so that its ``cleanup``
    and ``enter`` are the ones Slicer calls.

    The widget sets ``self.controller`` and ``self.logic`` in ``setup`` and then calls
    :meth:`startControllerPanel`: a timer polls the controller (child processes, device list), and the
    scene's close events reach it, as the scripted-module template handles them.
    """

    def startControllerPanel(self, pollMilliseconds: int) -> None:
        import qt

        self.observeScene(slicer.mrmlScene)
        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(pollMilliseconds)
        self._pollTimer.timeout.connect(lambda: self.controller.poll())
        self._pollTimer.start()

    def observeScene(self, scene) -> None:
        """Close Scene and scene loading reach the controller."""
        self.addObserver(scene, scene.StartCloseEvent, lambda *args: self.controller.sceneClosing())
        self.addObserver(scene, scene.EndCloseEvent, self.onSceneEndClose)
        # a loaded scene copies its values into the existing parameter node without closing first;
        # restoring a scene view (Slicer 5.8) restores the parameter node without either event
        self.addObserver(scene, scene.EndImportEvent, self.onSceneEndClose)
        self.addObserver(scene, scene.EndRestoreEvent, self.onSceneEndClose)

    def cleanup(self) -> None:
        """The module closes or Slicer exits: stop polling, end every child process tree."""
        if getattr(self, "_pollTimer", None) is not None:
            self._pollTimer.stop()
        if getattr(self, "controller", None) is not None:
            self.controller.cleanup()
        self.removeObservers()

    def enter(self) -> None:
        self.controller.enter()

    def onSceneEndClose(self, caller, event) -> None:
        # the template's pattern: the new scene's parameter node once the old scene is gone
        self.controller.setParameterNode(self.logic.getParameterNode())


def volumeSelector(nodeID: str | None = None):
    """A selector of the scene's single-component image volumes (no label maps, vector, tensor or DWI
    volumes: :data:`~MAGMSCommonLib.volumes.NOT_IMAGE_VOLUME_TYPES`), empty allowed."""
    selector = slicer.qMRMLNodeComboBox()
    selector.nodeTypes = ["vtkMRMLScalarVolumeNode"]
    selector.hideChildNodeTypes = list(NOT_IMAGE_VOLUME_TYPES)
    selector.noneEnabled, selector.addEnabled, selector.removeEnabled = True, False, False
    selector.setMRMLScene(slicer.mrmlScene)
    selector.setCurrentNodeID(nodeID or "")
    return selector


def fillComboBox(combo, items, current: str | None = None) -> None:
    """Replace a combo box's items by ``(data, text)`` pairs and select ``current`` (else the first),
    without emitting: what the controller shows is not a user's choice."""
    wasBlocked = combo.blockSignals(True)
    combo.clear()
    for data, text in items:
        combo.addItem(text, data)
    combo.currentIndex = max(combo.findData(current), 0) if current is not None else 0
    combo.blockSignals(wasBlocked)


def builtinModelsOrWarning() -> list:
    """The models installed with the extension (``qt-scripted-modules/Resources/Models``), the default
    first; a broken index is shown as a warning and lists none, so that it never hides a panel."""
    from magms.builtin import builtin_models
    from magms.errors import MAGMSError

    try:
        return builtin_models()
    except MAGMSError as err:
        slicer.util.warningDisplay(str(err))
        return []


def heavySelfTestsWanted() -> bool:
    return os.environ.get(HEAVY_SELF_TESTS) == "1"


def checkPanelOpensWithoutTorch(test, moduleName: str) -> None:
    """Open the module's panel; torch must not be loaded by that (devices and data checks run in children)."""
    slicer.mrmlScene.Clear()
    loaded = "torch" in sys.modules  # another extension may have imported it
    slicer.util.selectModule(moduleName)
    test.assertEqual("torch" in sys.modules, loaded, "opening the panel loaded torch")


def runSelfTests(test, moduleName: str, heavy: Callable[[], None]) -> None:
    """A module's ``runTest`` (Reload and Test): the light check, then ``heavy`` only if asked for.

    CTest does not call ``runTest``: its loader runs every ``test_*`` method, so the heavy ones are
    also marked ``unittest.skipUnless(heavySelfTestsWanted())`` in the module files.
    """
    checkPanelOpensWithoutTorch(test, moduleName)
    if not heavySelfTestsWanted():
        test.delayDisplay(f"Heavy test skipped: set {HEAVY_SELF_TESTS}=1 to install the dependencies and run it")
        return
    try:
        heavy()
    except unittest.SkipTest as skipped:  # the variable was set after the module was imported
        test.delayDisplay(f"Heavy test skipped: {skipped} (reload the module)")
