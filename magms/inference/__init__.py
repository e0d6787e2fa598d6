"""Inference, along the path of a case: the Segmenter (an opened model, its engine chosen, a case's
images to labels on the reference grid) and the use cases over it (one case and its outputs, review
aids, a batch, DICOM out).

* :mod:`~magms.inference.segmenter`: :class:`Segmenter`, :class:`Segmentation`.
* :mod:`~magms.inference.usecases`: what ``magms segment`` does with them, as plain functions.
* :mod:`~magms.inference.engine`: which engine runs the network (``--engine``).
* :mod:`~magms.inference.graphs`: the network's exported graphs, made once per model and cached.
* :mod:`~magms.inference.predictors`: the engines themselves, eager or on the exported graphs.

The model is opened once at the edge (:func:`magms.bundle.open_model`) and passed down.
"""

from __future__ import annotations

from magms.inference.segmenter import Segmentation, Segmenter

__all__ = ["Segmentation", "Segmenter"]
