"""The exported network as an ONNX model of standard operators (``model.onnx``), and
running such a model with onnxruntime.

The graph is the ReLU form of :mod:`mfc_hpc.learning.cpwl`, in float64, opset 17, with
only ``Sub``, ``Div``, ``Mul``, ``Add``, ``MatMul``, ``Max``, ``Min``, ``Relu``,
``Split``, ``Identity``, ``Softmax`` and ``ArgMax``:

* input ``features`` ``[S, p]`` (the raw feature columns, when the model has a projection:
  ``x = (((X - mean) / scale) @ direction - offset) / spread``) or ``x`` ``[S, d]`` (the
  states themselves);
* block ``n``: ``x <- x + dt U_n(x)``; in 1-D ``U_n = relu(x W1_n + B1_n) W2_n + B2_n``
  (the stored one-hidden-layer form), in 2-D with ``x_c = min(max(x, x_L), x_R)``,
  ``u = (x_c,1 - x_g,1)/h_1``, ``v = (x_c,2 - x_g,2)/h_2`` for every node ``g``:
  ``a = relu(u - v)``, ``b = relu(v - u)``, ``hat = relu(1 - relu(v + a) - relu(b - v))``,
  ``U_n = hat @ D_n`` with ``D_n[g, k] = b^{n+1/2}[k, g]`` (the nodal drift);
* outputs ``state`` ``[S, d]`` (``x_N``), ``logits`` ``[S, K]`` (``x_N W^T + b``),
  ``probabilities`` (soft-max) and ``label`` ``[S]`` (int64, the most probable class).

Metadata (``metadata_props``, strings): ``format`` = ``mfc_hpc.network.onnx``,
``format_version`` = ``1``, ``dim``, ``blocks``, ``dt``, ``nu``, ``input`` (``features`` or
``x``), ``class_names`` and ``feature_names`` (JSON lists), ``label`` (the label column
the model was trained with), and ``content_sha256``: the SHA-256 of the serialised graph
followed by the other metadata entries (sorted, ``key=value`` lines), checked when
:class:`OnnxModel` opens the file, because protobuf carries no checksum and a flipped
bit in a weight would otherwise change the predictions silently (files without the entry
are read unchecked). The deterministic network only
(no noise). Needs the ``onnx`` package to write and ``onnxruntime`` to run (pinned in
``scripts/setup.sh``); neither is needed by anything else.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..errors import OutputError
from .network import ModelError, ResidualNetwork

__all__ = ["ONNX_FORMAT", "to_onnx", "save_onnx", "OnnxModel", "OPSET"]

ONNX_FORMAT = "mfc_hpc.network.onnx"
OPSET = 17


def to_onnx(net: ResidualNetwork):
    """The ``onnx.ModelProto`` of a network (module docstring)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    d = net.ndim
    inits: list = []
    nodes: list = []

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float64), name))
        return name

    def op(kind: str, inputs: list[str], out: str, **attrs) -> str:
        nodes.append(helper.make_node(kind, inputs, [out], name=out, **attrs))
        return out

    proj = net.projection
    if proj is not None:
        inp = helper.make_tensor_value_info("features", TensorProto.DOUBLE, ["S", len(proj.feature_names)])
        z = op("Div", [op("Sub", ["features", const("proj_mean", proj.mean)], "p_c"),
                       const("proj_scale", proj.scale)], "p_z")
        z = op("MatMul", [z, const("proj_direction", proj.direction)], "p_x")
        x = op("Div", [op("Sub", [z, const("proj_offset", proj.offset)], "p_o"),
                       const("proj_spread", proj.spread)], "x0")
    else:
        inp = helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["S", d])
        x = "x"
    dt = const("dt", np.array(net.dt))
    if d == 2:
        g = net.grid
        P = g.points().reshape(-1, 2)
        lo, hi = const("lower", np.array(g.lower)), const("upper", np.array(g.upper))
        c1, c2 = const("centre1", P[:, 0]), const("centre2", P[:, 1])
        h1, h2 = const("h1", np.array(g.h[0])), const("h2", np.array(g.h[1]))
        one = const("one", np.array(1.0))
        inits.append(numpy_helper.from_array(np.array([1, 1], dtype=np.int64), "ones"))
        ones = "ones"
    for n in range(net.N):
        p = f"b{n}_"
        if d == 1:
            a = op("Relu", [op("Add", [op("MatMul", [x, const(p + "W1", net.W1[n][None, :])], p + "m"),
                                       const(p + "B1", net.B1[n])], p + "z")], p + "a")
            U = op("Add", [op("MatMul", [a, const(p + "W2", net.W2[n][:, None])], p + "u"),
                           const(p + "B2", np.array([net.B2[n]]))], p + "U")
        else:
            xc = op("Min", [op("Max", [x, lo], p + "xl"), hi], p + "xc")
            x1, x2 = p + "x1", p + "x2"
            nodes.append(helper.make_node("Split", [xc, ones], [x1, x2], axis=1, name=p + "split"))
            u = op("Div", [op("Sub", [x1, c1], p + "du"), h1], p + "uu")
            v = op("Div", [op("Sub", [x2, c2], p + "dv"), h2], p + "vv")
            ra = op("Relu", [op("Sub", [u, v], p + "umv")], p + "ra")
            rb = op("Relu", [op("Sub", [v, u], p + "vmu")], p + "rb")
            rc = op("Relu", [op("Add", [v, ra], p + "vpa")], p + "rc")
            rd = op("Relu", [op("Sub", [rb, v], p + "bmv")], p + "rd")
            hat = op("Relu", [op("Sub", [op("Sub", [one, rc], p + "h0"), rd], p + "h1")], p + "hat")
            D = net.drift[n].reshape(2, -1).T  # [G, 2]
            U = op("MatMul", [hat, const(p + "D", D)], p + "U")
        x = op("Add", [x, op("Mul", [U, dt], p + "dtU")], p + "x")
    nodes.append(helper.make_node("Identity", [x], ["state"]))
    logits = op("Add", [op("MatMul", ["state", const("head_WT", net.head.weights.T)], "hz"),
                        const("head_b", net.head.biases)], "logits")
    op("Softmax", [logits], "probabilities", axis=-1)
    op("ArgMax", [logits], "label", axis=1, keepdims=0)
    K = net.K
    outs = [helper.make_tensor_value_info("state", TensorProto.DOUBLE, ["S", d]),
            helper.make_tensor_value_info("logits", TensorProto.DOUBLE, ["S", K]),
            helper.make_tensor_value_info("probabilities", TensorProto.DOUBLE, ["S", K]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["S"])]
    graph = helper.make_graph(nodes, "mfc_hpc_residual_network", [inp], outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="mfc_hpc", doc_string=__doc__.split("\n\n")[0])
    model.ir_version = 8
    meta = {"format": ONNX_FORMAT, "format_version": "1", "dim": str(d), "blocks": str(net.N),
            "dt": repr(net.dt), "nu": repr(net.nu), "input": "features" if proj is not None else "x",
            "class_names": json.dumps(list(net.class_names)),
            "feature_names": json.dumps(list(proj.feature_names) if proj is not None else []),
            "label": str(((net.config or {}).get("data") or {}).get("label", "label"))}
    meta["content_sha256"] = content_digest(graph.SerializeToString(), meta)
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    return model


def content_digest(graph: bytes, meta: dict[str, str]) -> str:
    """SHA-256 of a serialised graph and the metadata entries other than the digest."""
    h = hashlib.sha256(graph)
    for k in sorted(meta):
        if k != "content_sha256":
            h.update(f"\n{k}={meta[k]}".encode())
    return h.hexdigest()


def save_onnx(net: ResidualNetwork, path: str | Path) -> Path:
    """Write ``model.onnx`` atomically."""
    path = Path(path)
    data = to_onnx(net).SerializeToString()
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    return path


class OnnxModel:
    """An ``mfc_hpc`` ONNX model run by onnxruntime: its metadata and :meth:`run`."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"model: no such file: {path}")
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelError("model: reading an ONNX model needs onnxruntime (bash scripts/setup.sh installs it)") from None
        raw = path.read_bytes()
        try:
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            self.session = ort.InferenceSession(raw, sess_options=opts, providers=["CPUExecutionProvider"])
            meta = dict(self.session.get_modelmeta().custom_metadata_map)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            msg = " ".join(str(e).split())[:200]
            raise ModelError(f"model: {path} is not a readable ONNX model ({msg})") from None
        if "content_sha256" in meta:
            self._verify(path, raw, meta)
        if meta.get("format") != ONNX_FORMAT:
            raise ModelError(f"model: {path} is an ONNX model but not an {ONNX_FORMAT} export (no 'format' metadata)")
        if meta.get("format_version") != "1":
            raise ModelError(f"model: {path} has ONNX format_version {meta.get('format_version')}, this reads 1")
        try:
            self.dim = int(meta["dim"])
            self.blocks = int(meta["blocks"])
            self.class_names = tuple(json.loads(meta["class_names"]))
            self.feature_names = tuple(json.loads(meta["feature_names"]))
            self.input = meta["input"]
            self.label = meta.get("label", "label")
        except (KeyError, ValueError) as e:
            raise ModelError(f"model: {path}: incomplete metadata ({e})") from None
        self.path = path

    @staticmethod
    def _verify(path: Path, raw: bytes, meta: dict[str, str]) -> None:
        try:
            import onnx
        except ImportError:  # onnxruntime alone (a user's machine): run unchecked
            return
        try:
            graph = onnx.load_model_from_string(raw).graph.SerializeToString()
        except Exception as e:  # noqa: BLE001 - protobuf decode errors
            raise ModelError(f"model: {path} is not a readable ONNX model ({' '.join(str(e).split())[:200]})") from None
        if content_digest(graph, meta) != meta["content_sha256"]:
            raise ModelError(f"model: {path}: content checksum mismatch (the file is corrupted)")

    @property
    def K(self) -> int:
        return len(self.class_names)

    def run(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        """``state``, ``logits``, ``probabilities``, ``label`` for ``inputs[S, p]`` (raw
        features when ``input == "features"``, else states ``[S, d]``)."""
        x = np.ascontiguousarray(np.asarray(inputs, dtype=np.float64))
        if x.ndim == 1:
            x = x[:, None]
        names = [o.name for o in self.session.get_outputs()]
        res = self.session.run(names, {self.session.get_inputs()[0].name: x})
        return dict(zip(names, res))
