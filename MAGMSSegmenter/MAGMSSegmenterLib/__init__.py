"""MAGMS Segmenter library: logic (MRML only), model registry, process runner. No Qt: testable with ``slicer-core``."""
