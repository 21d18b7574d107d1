"""Layer shapes of known networks, as Problems (BatchNorm folded: every conv has a bias)."""
from __future__ import annotations

from .problem import Problem

# torchvision's MobileNetV2: (expansion t, output channels c, repeats n, first stride s)
_MOBILENET_V2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                 (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def mobilenet_v2_layers(resolution: int = 224) -> list[dict]:
    """The stem (a dense 3x3 conv), then every depthwise and 1x1 conv of MobileNetV2 in order, each
    block followed by its fused forms (dwpw: the depthwise + project pair; pwdw: the expand +
    depthwise pair, where the block expands; ir: the whole inverted residual), as Problem fields
    without N/dtype/layout."""
    layers = [dict(op="conv", C=3, H=resolution, W=resolution, C_out=32, k=3, stride=2, act="relu6")]
    c_in, size = 32, resolution // 2                      # after the stem's stride-2 3x3 conv
    for t, c, n, s in _MOBILENET_V2:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = c_in * t
            if t != 1:
                layers.append(dict(op="pw", C=c_in, H=size, W=size, C_out=hidden, act="relu6"))
            layers.append(dict(op="dw", C=hidden, H=size, W=size, k=3, stride=stride, act="relu6"))
            layers.append(dict(op="pw", C=hidden, H=(size + 2 - 3) // stride + 1,
                               W=(size + 2 - 3) // stride + 1, C_out=c, act="none"))
            block = dict(H=size, W=size, C_out=c, k=3, stride=stride, act="relu6", act2="none")
            layers.append(dict(op="dwpw", C=hidden, **block))
            if t != 1:
                layers.append(dict(op="pwdw", C=c_in, H=size, W=size, C_out=hidden, k=3, stride=stride, act="relu6"))
            layers.append(dict(op="ir", C=c_in, expansion=t, **block))
            size = (size + 2 - 3) // stride + 1
            c_in = c
    layers.append(dict(op="pw", C=c_in, H=size, W=size, C_out=1280, act="relu6"))
    return layers


MODELS = {"mobilenet_v2": mobilenet_v2_layers}


def model_problems(model: str, ops=("dw", "pw"), batches=(1, 16), dtypes=("float16", "float32"),
                   layouts=("nhwc", "nchw"), tf32: bool = False) -> list[Problem]:
    """Distinct problems of a model for every batch/dtype/layout asked for, in model order. With tf32,
    each float32 1x1 problem also gets its twin that allows TF32 tensor cores (a problem of its own)."""
    if model not in MODELS:
        raise ValueError(f"model: unknown {model!r} (choose from {', '.join(MODELS)})")
    seen, problems = set(), []
    for layer in MODELS[model]():
        if layer["op"] not in ops:
            continue
        for batch in batches:
            for dtype in dtypes:
                for layout in layouts:
                    p = Problem(N=batch, dtype=dtype, layout=layout, bias=True, **layer)
                    twins = [p.replace(tf32=True)] if tf32 and p.op == "pw" and dtype == "float32" else []
                    for q in (p, *twins):
                        if q.key not in seen:
                            seen.add(q.key)
                            problems.append(q)
    return problems
