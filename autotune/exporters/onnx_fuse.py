"""Rewrite an ONNX graph so that its depthwise and pointwise convolutions run as autotune plugins.

    from autotune.exporters.onnx_fuse import fuse_file
    report = fuse_file("model.onnx", "fused.onnx")                 # every matching pattern
    report = fuse_file("model.onnx", "fused.onnx", db="tuned_db/autotune.db", gpu="NVIDIA H200")
    print(report.format())

The pattern is a Conv, optionally followed by BatchNormalization, optionally followed by Relu or
Clip(0, 6) (ReLU6):
  depthwise  group == C_in == C_out, square kernel 3/5/7, strides (1,1) or (2,2), symmetric pads,
             dilations 1  ->  op "dw_conv2d"
  pointwise  1x1 kernel, group 1, stride 1, no padding  ->  op "pw_conv2d"
The Conv's weight (and bias) and the BatchNormalization's parameters must be initializers; a
BatchNormalization or activation is absorbed only when it is the sole consumer of the tensor before
it (which must not be a graph output either). The BatchNormalization is folded into a new weight and
bias (always emitted) in the model's dtype:
    w' = w * gamma / sqrt(var + eps)      b' = (b - mean) * gamma / sqrt(var + eps) + beta
The replacement node, in domain "autotune" (opset import ("autotune", 1) is added), takes
[x, weight, bias], produces the last absorbed node's output, and carries the attributes
plugin_namespace="autotune", aot=1, kernel, stride, padding, act ("none"/"relu"/"relu6"),
layout="nchw" and, for pointwise, C_out. Everything else in the graph is left as it is; initializers
(and Constant nodes) only the absorbed nodes used are removed.

With a tuning database (`store` and `gpu`), a candidate is fused only when `autotune.lookup.choose`
finds its problem (shapes from ONNX shape inference) tuned on that GPU: the exact shape or the
nearest tuned shape of the same kind. The report says what was fused and what was not, and why.

With blocks=True (both TensorRT plugin implementations cover blocks), a second pass
merges chains of those plugin nodes whose intermediate tensors have no other reader: pw -> dw -> pw
[-> Add of the first pw's input] into "ir_conv2d" (an inverted residual; the Add is required exactly
when the stride is 1 and C_in == C_out, as the op defines it) and dw -> pw into "dwpw_conv2d". Their
weight and bias inputs are the stages' folded tensors flattened and concatenated in stage order;
attributes add act2 (the last 1x1's activation), C_out and, for ir, expansion. With a database, a
block is merged only when its tuned plan on that GPU is the single fused kernel.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..problem import Problem, ProblemError

DOMAIN = "autotune"
OP_TYPES = {"dw": "dw_conv2d", "pw": "pw_conv2d", "dwpw": "dwpw_conv2d", "ir": "ir_conv2d"}
_ONNX_DOMAINS = ("", "ai.onnx")


def require_onnx():
    try:
        import onnx
    except ImportError as exc:      # pragma: no cover - depends on the environment
        raise ImportError("autotune onnx-fuse needs the onnx package: python3 -m pip install onnx "
                          "(or the extra: pip install 'autotune[onnx]')") from exc
    return onnx


# ---- report -------------------------------------------------------------------------------------
@dataclass
class FusedNode:
    name: str                   # the replacement node's name (the Conv's)
    op_type: str                # dw_conv2d / pw_conv2d
    nodes: list                 # names of the nodes it replaces: Conv[, BatchNormalization][, act]
    act: str
    problem_key: str | None     # None when the shapes are unknown (only possible without a database)
    tier: str | None = None     # what the database lookup found, when one was given


@dataclass
class FuseReport:
    fused: list = field(default_factory=list)       # FusedNode
    skipped: list = field(default_factory=list)     # (node name, reason)

    def format(self) -> str:
        lines = [f"fused {len(self.fused)} convolution(s) into autotune plugins"]
        for f in self.fused:
            what = f.problem_key or "shape unknown"
            lines.append(f"  {f.name}: {f.op_type} <- {' + '.join(f.nodes)} | {what}"
                         + (f" | {f.tier}" if f.tier else ""))
        lines.append(f"not fused: {len(self.skipped)}")
        for name, reason in self.skipped:
            lines.append(f"  {name}: {reason}")
        return "\n".join(lines)


class FuseError(ValueError):
    """Bad arguments (an unknown GPU, ...), as opposed to patterns that are merely skipped."""


# ---- entry points -------------------------------------------------------------------------------
def fuse_file(in_path, out_path, db=None, gpu: str | None = None, blocks: bool = False) -> FuseReport:
    """Load, fuse and save. `db`: a database path (then only tuned shapes are fused)."""
    onnx = require_onnx()
    if not os.path.exists(in_path):
        raise FileNotFoundError(f"no such file: {in_path}")
    model = onnx.load(str(in_path))
    store = None
    if db is not None:
        from ..store import Store
        store = Store(db, readonly=True)
    fused, report = fuse_model(model, store=store, gpu=gpu, blocks=blocks)
    onnx.save(fused, str(out_path))
    return report


def resolve_gpu(store, gpu) -> dict:
    """The {name, compute_capability} dict lookup.choose needs: `gpu` is a dict, a GPU name or id as
    stored, or None when the database holds exactly one GPU."""
    if isinstance(gpu, dict):
        return gpu
    rows = store.gpus()
    if gpu is None:
        if len(rows) == 1:
            return rows[0]
        listed = ", ".join(repr(r["name"]) for r in rows) or "none"
        raise FuseError(f"the database {store.path} holds {len(rows)} GPUs ({listed}): choose one with --gpu")
    matches = [r for r in rows if gpu in (r["id"], r["name"])]
    if not matches:
        listed = ", ".join(repr(r["name"]) for r in rows) or "none"
        raise FuseError(f"no GPU {gpu!r} in {store.path} (it holds: {listed})")
    return matches[0]


def fuse_model(model, store=None, gpu=None, blocks: bool = False):
    """(fused copy of `model`, FuseReport). `store`: an autotune Store (optional); `gpu`: its GPU
    (name, id or dict; may be omitted when the store holds one GPU); blocks: also merge dwpw and
    inverted-residual chains (see the module's docstring)."""
    onnx = require_onnx()
    out = onnx.ModelProto()
    out.CopyFrom(model)
    gpu_info = resolve_gpu(store, gpu) if store is not None else None
    report = FuseReport()
    _Fuser(onnx, out, store, gpu_info, report, blocks).run()
    return out, report


# ---- the rewrite --------------------------------------------------------------------------------
@dataclass
class _Conv:
    op: str
    w: np.ndarray
    b: np.ndarray | None
    k: int
    stride: int
    padding: int
    dtype: str


@dataclass
class _Plugin:
    """A replacement node of the first pass, with what the block pass needs to merge it."""
    node: object
    op: str
    w: np.ndarray          # folded, float64
    b: np.ndarray
    act: str
    conv: _Conv
    problem: Problem | None
    fused: FusedNode


class _Fuser:
    def __init__(self, onnx, model, store, gpu, report, blocks=False):
        self.onnx, self.model, self.graph = onnx, model, model.graph
        self.store, self.gpu, self.report, self.blocks = store, gpu, report, blocks
        self.plugins = {}       # output tensor -> _Plugin
        self.opset = next((o.version for o in model.opset_import if o.domain in _ONNX_DOMAINS),
                          onnx.defs.onnx_opset_version())
        g = self.graph
        self.inits = {t.name: t for t in g.initializer}
        self.consts = {}        # Constant node outputs -> numpy value
        for node in g.node:
            if node.op_type == "Constant" and node.domain in _ONNX_DOMAINS:
                for a in node.attribute:
                    if a.name == "value":
                        self.consts[node.output[0]] = onnx.numpy_helper.to_array(a.t)
        self.consumers = {}     # tensor -> top-level nodes reading it
        for node in g.node:
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(node)
        self.other_refs = {o.name for o in g.output} | _subgraph_refs(g)
        self.names = {n.name for n in g.node} | set(self.inits) | {i.name for i in g.input} | \
            {o for n in g.node for o in n.output}
        self.produced_before = {o for n in g.node for o in n.output}
        self.shapes, self.elem_types = self._infer_shapes()

    # -- helpers ---------------------------------------------------------------------------------
    def _infer_shapes(self):
        shapes, types = {}, {}
        try:
            inferred = self.onnx.shape_inference.infer_shapes(self.model)
        except Exception:       # a model shape inference cannot handle: every shape stays unknown
            inferred = self.model
        g = inferred.graph
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            if not vi.type.HasField("tensor_type"):
                continue
            tt = vi.type.tensor_type
            types[vi.name] = tt.elem_type
            if tt.HasField("shape"):
                dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
                shapes[vi.name] = dims
        return shapes, types

    def _constant(self, name):
        if name in self.inits:
            return self.onnx.numpy_helper.to_array(self.inits[name])
        return self.consts.get(name)

    def _attrs(self, node) -> dict:
        return {a.name: self.onnx.helper.get_attribute_value(a) for a in node.attribute}

    def _unique(self, base):
        name, i = base, 1
        while name in self.names:
            name, i = f"{base}_{i}", i + 1
        self.names.add(name)
        return name

    def _sole_consumer(self, tensor):
        """The node that alone reads `tensor` (as its first input), or None."""
        users = self.consumers.get(tensor, [])
        if tensor in self.other_refs or len(users) != 1 or list(users[0].input).count(tensor) != 1 \
                or users[0].input[0] != tensor:
            return None
        return users[0]

    def _note_blocked(self, tensor, conv_name):
        """Report the BatchNormalization / activation consumers that could not be absorbed."""
        for user in self.consumers.get(tensor, []):
            if user.op_type in ("BatchNormalization", "Relu", "Clip") and user.domain in _ONNX_DOMAINS \
                    and user.input[0] == tensor:
                self.report.skipped.append(
                    (self._label(user), f"not absorbed into {conv_name}: its input {tensor} has other "
                                        f"consumers (or is a graph output)"))

    def _label(self, node):
        if not node.name:
            node.name = self._unique(f"{node.op_type}_{list(self.graph.node).index(node)}")
        return node.name

    # -- matching --------------------------------------------------------------------------------
    def _match_conv(self, node):
        """A _Conv, or the reason the Conv is not a supported depthwise/pointwise convolution."""
        a = self._attrs(node)
        if len(node.input) < 2 or node.input[1] not in self.inits:
            return "weight is not an initializer"
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if bias is not None and bias not in self.inits:
            return "bias is not an initializer"
        dtype = {self.onnx.TensorProto.FLOAT: "float32", self.onnx.TensorProto.FLOAT16: "float16"}.get(
            self.inits[node.input[1]].data_type)
        if dtype is None:
            type_name = self.onnx.TensorProto.DataType.Name(self.inits[node.input[1]].data_type)
            return f"weight dtype {type_name} is not supported (FLOAT, FLOAT16)"
        x_type = self.elem_types.get(node.input[0])
        if x_type and x_type != self.inits[node.input[1]].data_type:
            return "input and weight dtypes differ"
        w = self.onnx.numpy_helper.to_array(self.inits[node.input[1]])
        b = self.onnx.numpy_helper.to_array(self.inits[bias]) if bias else None
        if w.ndim != 4:
            return f"not a 2-D convolution (weight of rank {w.ndim})"
        c_out, c_in_per_group, kh, kw = w.shape
        group = a.get("group", 1)
        kernel = list(a.get("kernel_shape", [kh, kw]))
        strides = list(a.get("strides", [1, 1]))
        dilations = list(a.get("dilations", [1, 1]))
        auto_pad = a.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if kernel != [kh, kw]:
            return f"kernel_shape {kernel} does not match the weight {list(w.shape)}"
        if any(d != 1 for d in dilations):
            return f"dilations {dilations} (only 1 is supported)"
        if auto_pad == "VALID":
            pads = [0, 0, 0, 0]
        elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            if strides != [1, 1] or kh % 2 == 0 or kw % 2 == 0:
                return f"auto_pad {auto_pad} with strides {strides} and kernel {kernel} (padding not symmetric)"
            pads = [kh // 2, kw // 2, kh // 2, kw // 2]
        elif auto_pad != "NOTSET":
            return f"auto_pad {auto_pad!r} is not supported"
        if len(set(pads)) != 1:
            return f"pads {pads} are not the same on every side"
        if len(set(strides)) != 1:
            return f"strides {strides} differ between height and width"
        pad, stride = pads[0], strides[0]
        x_shape = self.shapes.get(node.input[0])
        c_in = x_shape[1] if x_shape and len(x_shape) == 4 and x_shape[1] else None
        if kh == kw == 1 and group == 1:
            if stride != 1 or pad != 0:
                return f"1x1 convolution with stride {stride} and padding {pad} (pointwise needs stride 1, no padding)"
            op = "pw"
        elif group == c_out and c_in_per_group == 1 and c_in in (None, group):
            if kh != kw:
                return f"kernel {kh}x{kw} is not square"
            if kh not in (3, 5, 7):
                return f"depthwise kernel {kh}x{kw} (only 3, 5, 7 are supported)"
            if stride not in (1, 2):
                return f"depthwise stride {stride} (only 1 and 2 are supported)"
            if not 0 <= pad < kh:
                return f"depthwise padding {pad} (must be below the kernel size {kh})"
            op = "dw"
        else:
            c_in_text = c_in if c_in is not None else c_in_per_group * group
            return (f"group {group} with {c_in_text} input and {c_out} output channels, kernel {kh}x{kw}: "
                    f"neither depthwise (group = C_in = C_out) nor pointwise (1x1, group 1)")
        return _Conv(op, w, b, kh, stride, pad, dtype)

    def _bn_params(self, node):
        """(scale, shift) of an inference BatchNormalization with constant parameters, or a reason."""
        if len(node.output) > 1 and any(node.output[1:]) or self._attrs(node).get("training_mode", 0):
            return "BatchNormalization in training mode"
        if len(node.input) != 5 or any(n not in self.inits for n in node.input[1:]):
            return "BatchNormalization parameters are not initializers"
        gamma, beta, mean, var = (self.onnx.numpy_helper.to_array(self.inits[n]).astype(np.float64)
                                  for n in node.input[1:])
        eps = float(self._attrs(node).get("epsilon", 1e-5))
        s = gamma / np.sqrt(var + eps)
        return s, beta - mean * s

    def _activation(self, node):
        """'relu' / 'relu6' for a Relu or a Clip(0, 6) / Clip(0, inf) node, or (None, reason)."""
        if node.op_type == "Relu":
            return "relu", None
        if self.opset >= 11:
            bounds = []
            for i in (1, 2):
                name = node.input[i] if len(node.input) > i and node.input[i] else None
                if name is None:
                    bounds.append(None)
                    continue
                value = self._constant(name)
                if value is None or np.size(value) != 1:
                    return None, "Clip bounds are not constants"
                bounds.append(float(np.asarray(value).reshape(())))
            lo, hi = bounds
        else:
            a = self._attrs(node)
            lo, hi = a.get("min"), a.get("max")
            lo = None if lo is None else float(lo)
            hi = None if hi is None or hi >= 3.4e38 else float(hi)
        if lo == 0.0 and hi == 6.0:
            return "relu6", None
        if lo == 0.0 and hi is None:
            return "relu", None
        return None, f"Clip({lo}, {hi}) is neither ReLU nor ReLU6"

    def _problem(self, conv_name, c: _Conv, x_name, act):
        """(Problem or None, reason or None)."""
        shape = self.shapes.get(x_name)
        if not shape or len(shape) != 4 or not all(shape):
            return None, "shape unknown"
        N, C, H, W = shape
        try:
            if c.op == "dw":
                return Problem("dw", N, C, H, W, k=c.k, stride=c.stride, padding=c.padding, bias=True,
                               act=act, dtype=c.dtype, layout="nchw"), None
            return Problem("pw", N, C, H, W, C_out=int(c.w.shape[0]), bias=True, act=act, dtype=c.dtype,
                           layout="nchw"), None
        except ProblemError as exc:
            return None, f"not a supported problem: {exc}"

    def _tier(self, problem):
        """(accepted, description) from the database lookup."""
        from ..lookup import choose
        try:
            _, _, label = choose(problem, self.store, self.gpu)
        except ValueError as exc:
            return False, str(exc)
        return label.startswith("exact") or label.startswith("nearest"), label

    # -- the pass --------------------------------------------------------------------------------
    def run(self):
        g = self.graph
        nodes = list(g.node)
        replaced, absorbed, used_before = {}, set(), set()
        for node in nodes:
            if node.op_type != "Conv" or node.domain not in _ONNX_DOMAINS:
                continue
            name = self._label(node)
            conv = self._match_conv(node)
            if isinstance(conv, str):
                self.report.skipped.append((name, conv))
                continue
            chain, act = [node], "none"
            w = conv.w.astype(np.float64)
            b = conv.b.astype(np.float64) if conv.b is not None else np.zeros(w.shape[0])
            tail = node.output[0]
            nxt = self._sole_consumer(tail)
            if nxt is None:
                self._note_blocked(tail, name)
            elif nxt.op_type == "BatchNormalization" and nxt.domain in _ONNX_DOMAINS:
                params = self._bn_params(nxt)
                if isinstance(params, str):
                    self.report.skipped.append((self._label(nxt), f"not absorbed into {name}: {params}"))
                    nxt = None
                else:
                    scale, shift = params
                    w = w * scale[:, None, None, None]
                    b = b * scale + shift
                    chain.append(nxt)
                    tail = nxt.output[0]
                    nxt = self._sole_consumer(tail)
                    if nxt is None:
                        self._note_blocked(tail, name)
            if nxt is not None and nxt.op_type in ("Relu", "Clip") and nxt.domain in _ONNX_DOMAINS:
                kind, why = self._activation(nxt)
                if kind is None:
                    self.report.skipped.append((self._label(nxt), f"not absorbed into {name}: {why}"))
                else:
                    act = kind
                    chain.append(nxt)
                    tail = nxt.output[0]
            problem, why = self._problem(name, conv, node.input[0], act)
            tier = None
            if problem is None and (why != "shape unknown" or self.store is not None):
                self.report.skipped.append((name, why))
                continue
            if problem is not None and self.store is not None:
                ok, tier = self._tier(problem)
                if not ok:
                    self.report.skipped.append(
                        (name, f"not tuned on {self.gpu['name']}: {problem.key} (lookup would use {tier})"))
                    continue
            replaced[id(node)] = self._replacement(name, conv, w, b, node.input[0], tail, act)
            absorbed.update(id(n) for n in chain[1:])
            for n in chain:
                used_before.update(i for i in n.input[1:] if i)
            fused = FusedNode(name, OP_TYPES[conv.op], [n.name for n in chain], act,
                              problem.key if problem else None, tier)
            self.report.fused.append(fused)
            self.plugins[tail] = _Plugin(replaced[id(node)], conv.op, w, b, act, conv, problem, fused)
        if not replaced:
            return
        new_nodes = [replaced.get(id(n), n) for n in nodes if id(n) not in absorbed]
        if self.blocks:
            new_nodes = self._merge_blocks(new_nodes, used_before)
        del g.node[:]
        g.node.extend(new_nodes)
        self._clean_up(used_before)
        if not any(o.domain == DOMAIN for o in self.model.opset_import):
            self.model.opset_import.append(self.onnx.helper.make_opsetid(DOMAIN, 1))

    def _weights(self, name, dtype, w, b):
        """Initializers for a plugin's weight and bias (in the model's dtype); their names."""
        helper, numpy_helper = self.onnx.helper, self.onnx.numpy_helper
        w_name, b_name = self._unique(f"{name}.autotune_weight"), self._unique(f"{name}.autotune_bias")
        dt = np.dtype(dtype)
        for arr, arr_name in ((w, w_name), (b, b_name)):
            tensor = numpy_helper.from_array(np.ascontiguousarray(arr.astype(dt)), arr_name)
            self.graph.initializer.append(tensor)
            if self.model.ir_version < 4:        # initializers had to be graph inputs then
                self.graph.input.append(helper.make_tensor_value_info(arr_name, tensor.data_type, arr.shape))
        return w_name, b_name

    def _replacement(self, name, conv: _Conv, w, b, x_name, out_name, act):
        w_name, b_name = self._weights(name, conv.dtype, w, b)
        attrs = dict(plugin_namespace=DOMAIN, aot=1, kernel=conv.k, stride=conv.stride, padding=conv.padding,
                     act=act, layout="nchw")
        if conv.op == "pw":
            attrs["C_out"] = int(w.shape[0])
        return self.onnx.helper.make_node(OP_TYPES[conv.op], [x_name, w_name, b_name], [out_name], name=name,
                                          domain=DOMAIN, **attrs)

    # -- the block pass --------------------------------------------------------------------------
    def _merge_blocks(self, nodes, used_before):
        """Merge chains of first-pass plugin nodes into ir_conv2d / dwpw_conv2d nodes."""
        readers = {}
        for n in nodes:
            for i in n.input:
                readers.setdefault(i, []).append(n)

        def only_reader(tensor):
            users = readers.get(tensor, [])
            return users[0] if len(users) == 1 and tensor not in self.other_refs else None

        def plugin_after(p):
            nxt = only_reader(p.node.output[0])
            return self.plugins.get(nxt.output[0]) if nxt is not None and nxt.domain == DOMAIN else None

        gone, merged = set(), {}
        for p1 in [self.plugins[n.output[0]] for n in nodes if n.output[0] in self.plugins]:
            if id(p1.node) in gone:
                continue
            chain, add = None, None
            d = plugin_after(p1)
            p2 = plugin_after(d) if d is not None and d.op == "dw" else None
            if p1.op == "pw" and d is not None and d.op == "dw" and p2 is not None and p2.op == "pw":
                chain = [p1, d, p2]
                x = p1.node.input[0]
                user = only_reader(p2.node.output[0])
                if user is not None and user.op_type == "Add" and user.domain in _ONNX_DOMAINS \
                        and sorted(user.input) == sorted([p2.node.output[0], x]):
                    add = user
            elif p1.op == "dw" and d is not None and d.op == "pw":
                chain = [p1, d]
            if chain is None:
                continue
            block = self._block(chain, add)
            if isinstance(block, str):      # (an inverted residual's second half may still make a dwpw)
                kind = "an inverted residual" if len(chain) == 3 else "a dwpw block"
                self.report.skipped.append((chain[0].fused.name, f"not merged into {kind}: {block}"))
                continue
            node, fused = block
            for p in chain:
                gone.add(id(p.node))
                self.report.fused.remove(p.fused)
                used_before.update(p.node.input[1:])
            if add is not None:
                gone.add(id(add))
            merged[id(chain[0].node)] = node
            self.report.fused.append(fused)
        return [merged.get(id(n), n) for n in nodes if id(n) not in gone or id(n) in merged]

    def _block(self, chain, add):
        """(node, FusedNode) for a dw->pw or pw->dw->pw(->Add) chain, or why it cannot be one block."""
        first, last = chain[0], chain[-1]
        dw = chain[-2]
        if len(chain) == 3 and first.act != dw.act:
            return f"expand activation {first.act} differs from the depthwise's {dw.act}"
        x_shape = self.shapes.get(first.node.input[0])
        if not x_shape or len(x_shape) != 4 or not all(x_shape):
            return "shape unknown"
        N, C, H, W = x_shape
        hidden = dw.w.shape[0]
        fields = dict(N=N, C=C, H=H, W=W, C_out=int(last.w.shape[0]), k=dw.conv.k, stride=dw.conv.stride,
                      padding=dw.conv.padding, bias=True, act=dw.act, act2=last.act, dtype=dw.conv.dtype,
                      layout="nchw")
        if len(chain) == 3:
            if hidden % C:
                return f"{hidden} hidden channels are not a multiple of the {C} inputs"
            problem = Problem("ir", expansion=hidden // C, **fields)
            if problem.residual != (add is not None):
                return "the residual Add is missing" if problem.residual else "an Add the op does not define"
        else:
            problem = Problem("dwpw", **fields)
        if self.store is not None:
            from ..plans import choose_plan
            plan = choose_plan(problem, self.store, self.gpu)
            if plan.depth != plan.max_depth:
                return f"its tuned plan on {self.gpu['name']} runs it as separate kernels ({plan.reason})"
        name = first.fused.name
        w = np.concatenate([p.w.reshape(-1) for p in chain])
        b = np.concatenate([p.b for p in chain])
        w_name, b_name = self._weights(name, dw.conv.dtype, w, b)
        attrs = dict(plugin_namespace=DOMAIN, aot=1, kernel=dw.conv.k, stride=dw.conv.stride,
                     padding=dw.conv.padding, act=dw.act, act2=last.act, C_out=int(last.w.shape[0]), layout="nchw")
        if problem.op == "ir":
            attrs["expansion"] = problem.expansion
        out = add.output[0] if add is not None else last.node.output[0]
        node = self.onnx.helper.make_node(OP_TYPES[problem.op], [first.node.input[0], w_name, b_name], [out],
                                          name=name, domain=DOMAIN, **attrs)
        absorbed = [n for p in chain for n in p.fused.nodes] + ([self._label(add)] if add is not None else [])
        return node, FusedNode(name, OP_TYPES[problem.op], absorbed, dw.act, problem.key)

    def _clean_up(self, candidates):
        """Drop initializers and Constant nodes only absorbed nodes read, and stale value_info."""
        g = self.graph
        while True:
            read = {i for n in g.node for i in n.input} | {o.name for o in g.output} | _subgraph_refs(g)
            dead_consts = [n for n in g.node if n.op_type == "Constant" and n.output[0] in candidates
                           and n.output[0] not in read]
            if not dead_consts:
                break
            keep = [n for n in g.node if all(n is not d for d in dead_consts)]
            del g.node[:]
            g.node.extend(keep)
        dead = {name for name in candidates if name not in read and name in {t.name for t in g.initializer}}
        keep_inits = [t for t in g.initializer if t.name not in dead]
        del g.initializer[:]
        g.initializer.extend(keep_inits)
        keep_inputs = [i for i in g.input if i.name not in dead]
        del g.input[:]
        g.input.extend(keep_inputs)
        produced = {o for n in g.node for o in n.output}
        keep_vi = [v for v in g.value_info if v.name in produced or v.name not in self.produced_before]
        del g.value_info[:]
        g.value_info.extend(keep_vi)


def _subgraph_refs(graph) -> set:
    """Names read by nodes inside subgraphs (If/Loop/Scan bodies), which may refer to outer tensors."""
    refs = set()
    for node in graph.node:
        for a in node.attribute:
            subs = ([a.g] if a.HasField("g") else []) + list(a.graphs)
            for sub in subs:
                refs.update(i for n in sub.node for i in n.input)
                refs.update(o.name for o in sub.output)
                refs |= _subgraph_refs(sub)
    return refs
