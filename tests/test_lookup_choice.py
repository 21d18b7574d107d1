"""Which tuned variant lookup picks, without a GPU: exact, nearest shape on this GPU, same compute
capability on another GPU, then the safe default - and never a variant whose constraints the
requested shape breaks."""
import pytest

from autotune.kernels import depthwise
from autotune.lookup import choose
from autotune.problem import Problem
from autotune.store import OK, Store

H200 = {"name": "NVIDIA H200", "compute_capability": "9.0", "arch": "sm_90", "sm_count": 132,
        "l2_bytes": 1, "memory_bytes": 1, "copy_bandwidth": 3e12}
H100 = dict(H200, name="NVIDIA H100 80GB HBM3")
A100 = dict(H200, name="NVIDIA A100", compute_capability="8.0", arch="sm_80")
TUNED = Problem("dw", 16, 32, 112, 112, k=3, act="relu6", dtype="float16", layout="nhwc")
CONFIG = {"vec": 8, "ch_per_block": 32, "tile_h": 4, "tile_w": 8, "out_h": 2, "out_w": 1,
          "adjacent_cols": False, "stage_input": True, "unroll_rows": True}


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "l.db")
    gid = s.add_gpu(H200)
    s.add_problem(TUNED)
    s.add_trial(gid, TUNED, "depthwise_nhwc", CONFIG, OK, time_us=10.0)
    return s


def test_exact(store):
    family, config, fallback = choose(TUNED, store, H200)
    assert (family.name, config, fallback) == ("depthwise_nhwc", CONFIG, "exact")


def test_nearest_shape_on_same_gpu(store):
    family, config, fallback = choose(TUNED.replace(N=8, H=100, W=90), store, H200)
    assert config == CONFIG and fallback.startswith("nearest tuned shape on this GPU: " + TUNED.key)


def test_same_compute_capability(store):
    _, config, fallback = choose(TUNED, store, H100)
    assert config == CONFIG and fallback.startswith("same compute capability")


def test_other_arch_gets_default(store):
    family, config, fallback = choose(TUNED, store, A100)
    assert fallback.startswith("default") and config == family.default_config(TUNED)


def test_variant_that_breaks_constraints_is_not_reused(store):
    other = TUNED.replace(C=20)                   # vec 8 does not divide 20
    family, config, fallback = choose(other, store, H200)
    assert fallback.startswith("default") and family.check(other, config) is None


def test_different_kind_of_problem_is_not_reused(store):
    for other in (TUNED.replace(act="none"), TUNED.replace(stride=2), TUNED.replace(dtype="float32")):
        _, _, fallback = choose(other, store, H200)
        assert fallback.startswith("default")


def test_no_database():
    family, config, fallback = choose(TUNED, None, H200)
    assert family is depthwise.NHWC and fallback.startswith("default")


def test_activations_must_lie_in_the_problem_layout():
    """An NHWC kernel takes NHWC-shaped dense data or an NCHW-shaped channels_last view of it, never
    NCHW-ordered data that merely has the NCHW shape (it would read the wrong elements)."""
    from autotune.lookup import _layouts, _stored_at

    class Interface:            # __cuda_array_interface__ with C-contiguous (None) or explicit strides
        def __init__(self, shape, strides=None):
            self.shape = shape
            self.__cuda_array_interface__ = {"shape": shape, "strides": strides, "typestr": "<f2",
                                             "data": (0, False), "version": 3}

    class Tensor:               # torch-like: element strides from stride()
        def __init__(self, shape, strides):
            self.shape, self._strides = shape, strides

        def stride(self):
            return self._strides

    nhwc = _layouts("nhwc", 2, 8, 4, 5)
    assert set(nhwc) == {(2, 4, 5, 8), (2, 8, 4, 5)}
    assert _stored_at(Interface((2, 4, 5, 8)), nhwc[(2, 4, 5, 8)], 2)
    assert not _stored_at(Interface((2, 8, 4, 5)), nhwc[(2, 8, 4, 5)], 2)           # NCHW data
    assert _stored_at(Tensor((2, 8, 4, 5), (160, 1, 40, 8)), nhwc[(2, 8, 4, 5)], 2)  # channels_last
    assert not _stored_at(Tensor((2, 8, 4, 5), (160, 20, 5, 1)), nhwc[(2, 8, 4, 5)], 2)
    assert _stored_at(Interface((2, 4, 5, 8), (320, 80, 16, 2)), nhwc[(2, 4, 5, 8)], 2)       # bytes: dense
    assert not _stored_at(Interface((2, 4, 5, 8), (640, 160, 32, 4)), nhwc[(2, 4, 5, 8)], 2)   # every other element
    # a size-1 dimension may carry any stride
    assert _stored_at(Tensor((1, 8, 1, 1), (8, 1, 1, 1)), _layouts("nhwc", 1, 8, 1, 1)[(1, 8, 1, 1)], 2)
    assert set(_layouts("nchw", 2, 8, 4, 5)) == {(2, 8, 4, 5)}
    # C == H == W: the two shapes coincide, and the NHWC data's own strides win
    assert _layouts("nhwc", 2, 20, 20, 20) == {(2, 20, 20, 20): (8000, 400, 20, 1)}


def test_row_from_an_older_version_of_a_family_is_skipped(tmp_path):
    """A best row whose configuration has other parameters than the family has today (a database from
    an older version) is passed over, not handed to check() (which would fail on the missing keys)."""
    s = Store(tmp_path / "old.db")
    gid = s.add_gpu(H200)
    s.add_problem(TUNED)
    s.add_trial(gid, TUNED, "depthwise_nhwc", {k: v for k, v in CONFIG.items() if k != "unroll_rows"}, OK, time_us=5.0)
    family, config, fallback = choose(TUNED, s, H200)
    assert fallback.startswith("default") and family.check(TUNED, config) is None


def test_stale_best_row_falls_back_to_the_fastest_trial_the_code_runs(store):
    """A best row written by an older version of a family (a parameter it no longer has) is skipped for
    the problem's own fastest usable trial, not for another shape's."""
    gid = store.gpus()[0]["id"]
    store.add_trial(gid, TUNED, "depthwise_nhwc", {**CONFIG, "retired": 1}, OK, time_us=5.0)   # now the best row
    assert store.best(gid, TUNED.key)["config"] == {**CONFIG, "retired": 1}
    family, config, fallback = choose(TUNED, store, H200)
    assert (family.name, config) == ("depthwise_nhwc", CONFIG) and fallback.startswith("exact (")
