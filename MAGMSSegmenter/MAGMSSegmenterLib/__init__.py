"""MAGMS Segmenter library: the Segmenter's logic (MRML only, no Qt; testable with ``slicer-core``).

Shared helpers are in MAGMSCommonLib."""
