"""MAGMS: modality-agnostic brain-tumour segmentation with multi-modality self-distillation.

The Slicer-free core: modality and label registries, the MAG-MS network and loss, and the model
bundle. Nothing here imports ``slicer``, ``vtk`` or ``qt``.
"""

__version__ = "0.2.0"
