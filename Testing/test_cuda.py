"""The CUDA paths of inference, marked ``cuda`` and skipped without a GPU (``Testing/benchmarks/gpu_check.sh``
runs them): mixed precision against the CPU, the out-of-memory fallback forced by a memory cap, the engine
choice on CUDA. The built-in model on a real BraTS 2018 case."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import DATA, needs_data
from magms.builtin import builtin_model
from magms.errors import ConfigError
from magms.inference import Segmenter

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (Testing/benchmarks/gpu_check.sh runs these on a GPU)"),
    needs_data,
]

CASE = "Brats18_CBICA_AQR_1"
FILES = {"flair": "flair", "t1": "t1", "t1c": "t1ce", "t2": "t2"}


@pytest.fixture(scope="module")
def case():
    folder = DATA / "brats18" / CASE
    if not folder.is_dir():
        pytest.skip(f"no {folder} (carry brats18/{CASE} to the GPU machine, MAGMS_TEST_DATA)")
    return {slot: folder / f"{CASE}_{name}.nii.gz" for slot, name in FILES.items()}


@pytest.fixture(scope="module")
def on_cpu(case):
    return Segmenter(builtin_model(), device="cpu", engine="eager").segment(case)


def test_amp_on_cuda_agrees_with_the_cpu(case, on_cpu):
    mixed = Segmenter(builtin_model(), device="cuda", amp=True)
    assert mixed.predictor.engine == "eager"
    result = mixed.segment(case)
    assert result.engine == "eager" and not result.notes
    assert np.mean(result.labels == on_cpu.labels) > 0.999
    full = Segmenter(builtin_model(), device="cuda", amp=False).segment(case)
    assert np.mean(full.labels == on_cpu.labels) > 0.9999


def test_out_of_memory_falls_back_to_the_cpu_under_a_memory_cap(case, on_cpu):
    segmenter = Segmenter(builtin_model(), device="cuda", sw_batch_size=8)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    # the weights and 16 MB more: less than one batch of 8 windows' activations
    torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_reserved() + 16 * 2**20) / total)
    try:
        result = segmenter.segment(case)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert "CUDA ran out of memory: running on the CPU" in result.notes
    assert segmenter.device == "cpu"
    assert np.mean(result.labels == on_cpu.labels) > 0.999


def test_the_engine_on_cuda_is_eager():
    assert Segmenter(builtin_model(), device="cuda", engine="auto").predictor.engine == "eager"
    with pytest.raises(ConfigError, match="runs on the CPU"):
        Segmenter(builtin_model(), device="cuda", engine="onnxruntime")
