import functools
import os

import pytest


@functools.lru_cache(maxsize=1)
def gpu_available() -> bool:
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if gpu_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (CuPy found none)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _private_kernel_cache(tmp_path_factory, monkeypatch):
    """Tests compile into a cache of their own, shared across one session."""
    monkeypatch.setenv("AUTOTUNE_CACHE_DIR", os.environ.get("AUTOTUNE_TEST_CACHE")
                       or str(tmp_path_factory.getbasetemp() / "kernel-cache"))


@pytest.fixture(scope="module")
def arch():
    """The arch of the GPU the gpu-marked tests run on, e.g. sm_90."""
    from autotune.device import gpu_arch
    return gpu_arch()
