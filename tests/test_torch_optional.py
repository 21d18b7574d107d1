"""Without PyTorch, autotune.torch says what to install, and the rest of autotune works."""
import importlib.util

import pytest


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="PyTorch is installed here")
def test_import_without_torch_says_what_to_install():
    with pytest.raises(ImportError, match="needs PyTorch"):
        import autotune.torch  # noqa: F401
    import autotune
    assert callable(autotune.lookup)
