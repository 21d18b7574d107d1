"""PyTorch integration (optional extra: needs torch): a model's MobileNet blocks on tuned kernels.

    import autotune.torch
    fast = autotune.torch.optimize(model.eval())      # model on the GPU, float16 or float32
    y = fast(x)                                       # x channels_last (NHWC kernels) or contiguous (NCHW)

`optimize` finds torchvision-style inverted residuals (a module with `conv` and `use_res_connect`,
as torchvision's InvertedResidual) and depthwise -> 1x1 chains inside any nn.Sequential
(Conv2d(groups=C) [BatchNorm2d] [ReLU/ReLU6] Conv2d(1x1) [BatchNorm2d] [ReLU/ReLU6]), folds each
BatchNorm into its conv, and replaces the block with a module that runs it through
`autotune.lookup` on torch's current stream, without copying tensors. The lookup happens at the
first call with each input shape, dtype and layout; an untuned shape falls back as lookup does and
says so once. The other convolutions stay PyTorch's, but a BatchNorm right after one of them in a
Sequential is folded into it too, and a ReLU/ReLU6 after that joins it in a `ConvAct` (MobileNetV2's
stem and last 1x1: the BatchNorm's and the bias's passes over their outputs are gone). Everything
else in the model is left as it is.
"""
from __future__ import annotations

import copy

import numpy as np

try:
    import torch
    from torch import nn
except ImportError as exc:      # pragma: no cover - exercised by a test without torch
    raise ImportError("autotune.torch needs PyTorch: pip install 'autotune[torch]' (or torch itself)") from exc

from .batchnorm import fold_batchnorm
from .problem import Problem

_DTYPES = {torch.float16: "float16", torch.float32: "float32"}


def optimize(model: nn.Module, db=None, inplace: bool = False) -> nn.Module:
    """A copy of `model` (or the model itself with inplace=True) whose MobileNet blocks run on
    tuned kernels. The model must be in eval mode: BatchNorm is folded with its running statistics."""
    if model.training:
        raise ValueError("optimize: call model.eval() first (BatchNorm is folded with its running statistics)")
    model = model if inplace else copy.deepcopy(model)
    model.autotune_blocks = _replace_blocks(model, db)
    model.autotune_folded = _fold_batchnorms(model, db)
    return model


class TunedBlock(nn.Module):
    """One block (dwpw or ir) on tuned kernels; `original` runs whatever the kernels cannot (other
    dtypes, CPU tensors)."""

    def __init__(self, fields: dict, weight, bias, original: nn.Module, db=None):
        super().__init__()
        self.fields, self.db, self.original = fields, db, original
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self._kernels: dict = {}
        self._cast: dict = {}

    def extra_repr(self):
        return ", ".join(f"{k}={v}" for k, v in self.fields.items())

    def forward(self, x):
        dtype = _DTYPES.get(x.dtype)
        if dtype is None or not x.is_cuda or x.dim() != 4:
            return self.original(x)
        layout = "nhwc" if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() else "nchw"
        if layout == "nchw" and not x.is_contiguous():
            x = x.contiguous()
        n, _, h, w = x.shape
        key = (n, h, w, dtype, layout)
        kernel = self._kernels.get(key)
        if kernel is None:
            from .lookup import lookup
            kernel = lookup(Problem(N=n, H=h, W=w, dtype=dtype, layout=layout, **self.fields), db=self.db)
            self._kernels[key] = kernel
        if x.dtype not in self._cast:
            self._cast[x.dtype] = (self.weight.to(x.dtype), self.bias.to(x.dtype))
        w_flat, b_flat = self._cast[x.dtype]
        return kernel(x, w_flat, b_flat)


# ---- finding blocks -----------------------------------------------------------------------------

def _activation(module) -> str | None:
    if isinstance(module, nn.ReLU6) or (isinstance(module, nn.Hardtanh) and module.min_val == 0 and module.max_val == 6):
        return "relu6"
    if isinstance(module, nn.ReLU):
        return "relu"
    return None


def _stages(modules) -> list | None:
    """[(conv, bn or None, act)] from a flat list of modules, or None if it holds anything else."""
    stages = []
    for m in modules:
        if isinstance(m, nn.Conv2d):
            stages.append([m, None, "none"])
        elif isinstance(m, nn.BatchNorm2d) and stages and stages[-1][1] is None and stages[-1][2] == "none":
            stages[-1][1] = m
        elif _activation(m) and stages and stages[-1][2] == "none":
            stages[-1][2] = _activation(m)
        elif isinstance(m, (nn.Identity, nn.Dropout)):
            continue
        else:
            return None
    return stages


def _leaves(module) -> list:
    children = list(module.children())
    return [module] if not children else [leaf for c in children for leaf in _leaves(c)]


def _is_depthwise(conv) -> bool:
    return conv.groups == conv.in_channels == conv.out_channels and conv.kernel_size[0] == conv.kernel_size[1] \
        and conv.kernel_size[0] in (3, 5, 7) and conv.stride[0] == conv.stride[1] and conv.dilation == (1, 1) \
        and conv.padding_mode == "zeros" and isinstance(conv.padding, tuple) and conv.padding[0] == conv.padding[1]


def _is_pointwise(conv) -> bool:
    return conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.groups == 1 and conv.padding in ((0, 0), 0)


def _numpy(t):
    return t.detach().double().cpu().numpy()


def _folded(conv, bn):
    """A conv's weight and bias (zeros when it has none) with the BatchNorm after it folded in, float64."""
    w = _numpy(conv.weight)
    b = _numpy(conv.bias) if conv.bias is not None else np.zeros(w.shape[0])
    if bn is not None:
        n = bn.num_features
        gamma = _numpy(bn.weight) if bn.weight is not None else np.ones(n)     # affine=False: 1 and 0
        beta = _numpy(bn.bias) if bn.bias is not None else np.zeros(n)
        w, b = fold_batchnorm(w, b, gamma, beta, _numpy(bn.running_mean), _numpy(bn.running_var), bn.eps)
    return w.reshape(-1), b


def _foldable(conv, bn) -> bool:
    return (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.num_features == conv.out_channels
            and bn.running_mean is not None and bn.running_var is not None)


class ConvAct(nn.Module):
    """A PyTorch conv (BatchNorm folded in) and the ReLU or ReLU6 after it. On float16 channels_last CUDA
    tensors a dense KxK conv that a kernel family runs (MobileNetV2's stem) runs on its tuned kernel,
    bias and activation included; other float16 convs run as cuDNN's fused conv + bias + ReLU (then an
    in-place clamp at 6 for ReLU6): PyTorch alone adds the bias in a separate pass over the output, and
    the activation in another."""

    def __init__(self, conv: nn.Conv2d, act: str, db=None):
        super().__init__()
        self.conv, self.act, self.db = conv, act, db
        c = conv
        self._fusable = c.padding_mode == "zeros" and not isinstance(c.padding, str) and c.bias is not None
        self._kernels: dict = {}        # (input shape, dtype) -> tuned kernel, or None: cuDNN runs it
        self._weight = None             # the weight in PyTorch's contiguous [C_out][C][K][K] order

    def extra_repr(self):
        return f"act={self.act}"

    def _tuned(self, x):
        key = (tuple(x.shape), x.dtype)
        if key not in self._kernels:
            self._kernels[key] = self._lookup(x)
        return self._kernels[key]

    def _lookup(self, x):
        c = self.conv
        square = c.kernel_size[0] == c.kernel_size[1] and c.stride[0] == c.stride[1] and c.padding[0] == c.padding[1]
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        if not (self._fusable and square and channels_last and c.groups == 1 and c.dilation == (1, 1)):
            return None
        from . import kernels
        from .lookup import lookup
        from .problem import Problem, ProblemError
        n, ch, h, w = x.shape
        try:
            problem = Problem("conv", N=n, C=ch, H=h, W=w, C_out=c.out_channels, k=c.kernel_size[0],
                              stride=c.stride[0], padding=c.padding[0], act=self.act, dtype=_DTYPES[x.dtype],
                              layout="nhwc")
        except ProblemError:
            return None
        if not kernels.families_for(problem):
            return None
        self._weight = c.weight.detach().contiguous()
        return lookup(problem, db=self.db)

    def forward(self, x):
        c = self.conv
        if self._fusable and x.is_cuda and x.dtype == torch.float16:
            kernel = self._tuned(x)
            if kernel is not None:
                return kernel(x, self._weight, c.bias)
            y = torch.cudnn_convolution_relu(x, c.weight, c.bias, c.stride, c.padding, c.dilation, c.groups)
            return y.clamp_max_(6.0) if self.act == "relu6" else y
        y = c(x)
        return torch.clamp(y, 0.0, 6.0) if self.act == "relu6" else torch.relu(y)


def _fold_batchnorms(module: nn.Module, db=None) -> int:
    """Folds every BatchNorm2d that directly follows a Conv2d in a Sequential (outside the tuned blocks,
    which fold their own) into that conv, leaving an Identity in its place; a ReLU or ReLU6 right after
    joins the conv in a ConvAct. Returns how many BatchNorms were folded."""
    folded = 0
    if isinstance(module, nn.Sequential):
        children = list(module.children())
        for i in range(len(children) - 1):
            conv, bn = children[i], children[i + 1]
            if not _foldable(conv, bn):
                continue
            w, b = _folded(conv, bn)
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(w.reshape(conv.weight.shape)))   # keeps dtype and memory format
                bias = torch.from_numpy(b).to(device=conv.weight.device, dtype=conv.weight.dtype)
                if conv.bias is None:
                    conv.bias = nn.Parameter(bias, requires_grad=False)
                else:
                    conv.bias.copy_(bias)
            module[i + 1] = nn.Identity()
            act = _activation(children[i + 2]) if i + 2 < len(children) else None
            if act:
                module[i] = ConvAct(conv, act, db)
                module[i + 2] = nn.Identity()
            folded += 1
    for child in module.children():
        if not isinstance(child, TunedBlock):
            folded += _fold_batchnorms(child, db)
    return folded


def _block(stages, residual: bool):
    """(Problem fields, flat weight, flat bias) for a dwpw or ir chain, or None if it is neither."""
    convs = [s[0] for s in stages]
    acts = [s[2] for s in stages]
    if len(stages) == 3 and _is_pointwise(convs[0]) and _is_depthwise(convs[1]) and _is_pointwise(convs[2]):
        if acts[0] != acts[1] or convs[1].in_channels % convs[0].in_channels:
            return None
        expand_conv, dw, project = convs
        fields = dict(op="ir", C=expand_conv.in_channels, expansion=dw.in_channels // expand_conv.in_channels,
                      C_out=project.out_channels, act=acts[0], act2=acts[2])
    elif len(stages) == 2 and _is_depthwise(convs[0]) and _is_pointwise(convs[1]):
        dw, project = convs
        op = "ir" if residual else "dwpw"
        fields = dict(op=op, C=dw.in_channels, C_out=project.out_channels, act=acts[0], act2=acts[1])
    else:
        return None
    if residual and not (fields["op"] == "ir" and dw.stride[0] == 1 and fields["C"] == fields["C_out"]):
        return None
    fields.update(k=dw.kernel_size[0], stride=dw.stride[0], padding=dw.padding[0], bias=True)
    parts = [_folded(s[0], s[1]) for s in stages]
    weight = torch.from_numpy(np.concatenate([w for w, _ in parts])).float()
    bias = torch.from_numpy(np.concatenate([b for _, b in parts])).float()
    device = convs[0].weight.device
    return fields, weight.to(device), bias.to(device)


def _replace_blocks(module: nn.Module, db) -> int:
    replaced = _replace_chains(module, db) if isinstance(module, nn.Sequential) else 0
    for name, child in list(module.named_children()):
        if isinstance(child, TunedBlock):
            continue
        if hasattr(child, "conv") and hasattr(child, "use_res_connect"):      # torchvision InvertedResidual
            stages = _stages(_leaves(child.conv))
            found = _block(stages, bool(child.use_res_connect)) if stages else None
            if found:
                setattr(module, name, TunedBlock(*found, original=child, db=db))
                replaced += 1
                continue
        replaced += _replace_blocks(child, db)
    return replaced


def _replace_chains(seq: nn.Sequential, db) -> int:
    """Depthwise -> 1x1 chains among a Sequential's direct children (the rest become Identity)."""
    children = list(seq.children())
    replaced, i = 0, 0
    while i < len(children):
        if not (isinstance(children[i], nn.Conv2d) and _is_depthwise(children[i])):
            i += 1
            continue
        j = i + 1
        while j < len(children) and (isinstance(children[j], nn.BatchNorm2d) or _activation(children[j])):
            j += 1
        if j >= len(children) or not (isinstance(children[j], nn.Conv2d) and _is_pointwise(children[j])):
            i += 1
            continue
        end = j + 1
        while end < len(children) and (isinstance(children[end], nn.BatchNorm2d) or _activation(children[end])):
            end += 1
        stages = _stages(children[i:end])
        found = _block(stages, False) if stages else None
        if not found:
            i += 1
            continue
        seq[i] = TunedBlock(*found, original=nn.Sequential(*children[i:end]), db=db)
        for k in range(i + 1, end):
            seq[k] = nn.Identity()
        replaced += 1
        i = end
    return replaced
