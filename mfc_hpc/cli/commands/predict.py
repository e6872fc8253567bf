"""``mfc-hpc predict MODEL DATA``: classify a table with an exported network.

``MODEL`` is ``model.npz`` (any state dimension, format version 1 or 2) or ``model.onnx``
(run by onnxruntime, without the rest of the package). The samples' feature columns are
projected with the model's stored projection; ``--feature`` names the ``d`` columns of
already projected states instead (NPZ models, and ONNX models without a projection).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("predict")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify labelled data with an exported network (model.npz or model.onnx)",
                       description="Push the samples of DATA (CSV/NPZ/HDF5 with the model's feature columns, "
                                   "or --feature columns of projected states) through the network and the "
                                   "head; print accuracy, cross-entropy and the confusion matrix (text, and "
                                   "JSON with --json). MODEL: model.npz or model.onnx.")
    p.add_argument("model", help="model file written by 'mfc-hpc train' (model.npz or model.onnx)")
    p.add_argument("data", help="table of samples")
    p.add_argument("--label", default=None,
                   help="label column (default: the one the model was trained with, else 'label')")
    p.add_argument("--feature", default=None, metavar="COL[,COL]",
                   help="the d columns of already projected states x (instead of the raw features)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the report as JSON to FILE")
    p.add_argument("--noise", action="store_true", help="stochastic network (noise sqrt(2 nu dt) per block; NPZ)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise")
    p.set_defaults(func=run)


def _check_json_target(path: str) -> None:
    from ...errors import BadInput

    p = Path(path)
    if not str(path).strip():
        raise BadInput("--json: the file name is empty")
    if p.is_dir():
        raise BadInput(f"--json: {p} is a directory (give a file name)")
    if not p.parent.is_dir():
        raise BadInput(f"--json: the directory {p.parent} does not exist")


def _columns(cols: dict, names: list[str], path: str):
    import numpy as np

    from ...errors import BadInput
    from ...problem.tables import _numeric

    miss = [f for f in names if f not in cols]
    if miss:
        raise BadInput(f"predict: {path} lacks the model's feature column(s) {', '.join(miss)} "
                       f"(columns: {', '.join(cols)})")
    return np.column_stack([_numeric(f, cols[f], Path(path)) for f in names])


def predict_table(model: str, data: str, label: str | None = None, feature: str | None = None,
                  noise: bool = False, seed: int = 0) -> dict:
    """Report of a model on a table: accuracy, cross-entropy and confusion matrix if the
    table has labels, and the predicted class counts."""
    import numpy as np

    from ...errors import BadInput
    from ...learning.network import ResidualNetwork, classification_report
    from ...problem.tables import _labels, read_table

    onnx = str(model).lower().endswith(".onnx")
    if onnx:
        from ...learning.onnx_export import OnnxModel
        m = OnnxModel(model)
        names, dim, default_label = m.class_names, m.dim, m.label
        if noise:
            raise BadInput("predict: --noise needs an NPZ model (the ONNX export is the deterministic network)")
    else:
        net = ResidualNetwork.load(model)
        names, dim = net.class_names, net.ndim
        default_label = ((net.config or {}).get("data") or {}).get("label", "label")
    explicit = label is not None
    label = label if explicit else default_label
    cols = read_table(data)
    nrows = len(next(iter(cols.values())))
    if nrows == 0:
        raise BadInput(f"predict: {data} has a header but no samples")
    feats = [f.strip() for f in feature.split(",")] if feature is not None else None
    if feats is not None and len(feats) != dim:
        raise BadInput(f"predict: --feature names {len(feats)} column(s); the model's state has {dim}")
    if onnx:
        if m.input == "features":
            if feats is not None:
                raise BadInput("predict: this ONNX model takes the raw feature columns "
                               f"({', '.join(m.feature_names)}); --feature needs model.npz")
            inputs = _columns(cols, list(m.feature_names), data)
        else:
            if feats is None:
                raise BadInput("predict: the model has no projection; give --feature with its state column(s)")
            inputs = _columns(cols, feats, data)
        res = m.run(inputs)
        pred = res["label"].astype(int)
        P = np.clip(res["probabilities"], 1e-300, None)
        x_count = inputs.shape[0]
    else:
        if feats is not None:
            x = _columns(cols, feats, data)
        else:
            if net.projection is None:
                raise BadInput("predict: the model has no projection; give --feature with its state column(s)")
            x = net.projection(_columns(cols, list(net.projection.feature_names), data))
        if dim == 1:
            x = x[:, 0]
        xN = net.forward(x, noise=noise, rng=seed)
        pred = net.head.predict(xN)
        x_count = x.shape[0]
    rep = {"model": str(model), "format": "onnx" if onnx else "npz", "data": str(data), "samples": int(x_count),
           "classes": list(names), "predicted_counts": np.bincount(pred, minlength=len(names)).tolist()}
    if label in cols:
        lab = _labels(cols[label])
        unknown = sorted(set(lab.tolist()) - set(names))
        if unknown:
            raise BadInput(f"predict: labels {', '.join(map(repr, unknown))} in {data} are not classes "
                           f"of the model ({', '.join(names)})")
        y = np.array([names.index(s) for s in lab.tolist()], dtype=int)
        if onnx:
            conf = np.zeros((len(names), len(names)), dtype=int)
            np.add.at(conf, (y, pred), 1)
            rep.update({"accuracy": float((pred == y).mean()),
                        "cross_entropy": float(-np.log(P[np.arange(y.size), y]).mean()),
                        "confusion": conf.tolist()})
        else:
            r = classification_report(net.head, xN, y)
            r.pop("samples")
            rep.update(r)
    elif explicit:
        raise BadInput(f"predict: no label column {label!r} in {data} (columns: {', '.join(cols)})")
    return rep


def format_report(rep: dict) -> str:
    """Text form of a prediction report."""
    lines = [f"model {rep['model']} ({rep['format']}) on {rep['data']}: {rep['samples']} samples"]
    if "accuracy" in rep:
        lines.append(f"accuracy      {rep['accuracy']:.4f}")
        lines.append(f"cross-entropy {rep['cross_entropy']:.4f}")
        names = rep["classes"]
        w = max([len(n) for n in names] + [len(str(v)) for row in rep["confusion"] for v in row]) + 2
        lines.append("confusion (rows: true, columns: predicted)")
        lines.append(" " * w + "".join(n.rjust(w) for n in names))
        for n, row in zip(names, rep["confusion"]):
            lines.append(n.ljust(w) + "".join(str(v).rjust(w) for v in row))
    else:
        lines.append("no labels: predicted counts " + ", ".join(
            f"{n} {c}" for n, c in zip(rep["classes"], rep["predicted_counts"])))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from mpi4py import MPI

    from ...fileio.summary import write_json

    if args.json is not None:
        _check_json_target(args.json)
    rep = predict_table(args.model, args.data, args.label, args.feature, args.noise, args.seed)
    if MPI.COMM_WORLD.Get_rank() == 0:
        print(format_report(rep), flush=True)
        if args.json:
            write_json(args.json, rep)
    return 0
