"""MAGMS Training library: logic (MRML only). No Qt: testable with ``slicer-core``."""
