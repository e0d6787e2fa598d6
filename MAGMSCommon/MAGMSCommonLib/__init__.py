"""What both MAGMS modules use on the Slicer side, below the widgets (no Qt, except ``widgets``).

* ``volumes``: the scene's volumes as model inputs (listing, slot guesses, checks, writing).
* ``segments``: segment terminology and label maps to merge, alike on Slicer 5.8 and 5.10.
* ``runner``: a ``magms`` child process with progress lines and cancel; ``child``: its Python
  and environment; ``signal``: plain-Python signals (Qt signals are unreliable on Python objects).
* ``parameters``: a panel's settings on its parameter node; ``devicelist``: the devices, asked of
  a child (``magms devices``), never of Slicer's Python.
* ``models``: the model registry, sha256-checked downloads, bundles trained here.
* ``dependencies``: what ``magms`` needs that Slicer's Python lacks, installed after asking.
* ``widgets``: widget helpers both module files use (the Slicer application only).
"""
