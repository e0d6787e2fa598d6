"""The data pipeline that training and inference share; neither of them is imported here.

* :mod:`~magms.data.io`: reading, checking and writing images (the one place that knows formats).
* :mod:`~magms.data.geometry`: world boxes and their overlap, without SimpleITK or MRML.
* :mod:`~magms.data.cases`: cases in the layouts users have (MSD, nnU-Net, folders, manifests).
* :mod:`~magms.data.inputs`: one case's inputs checked and brought onto the reference grid.
* :mod:`~magms.data.tensors`: SimpleITK images as MONAI MetaTensors, the invertible spatial steps.
* :mod:`~magms.data.preprocessing`: foreground, normalisation and the crop to the head.
* :mod:`~magms.data.dataset`: the checks and MONAI transforms that turn cases into training patches.

Importing this package imports nothing heavy; each module imports what it needs.
"""
