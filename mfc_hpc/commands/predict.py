"""``mfc-hpc predict MODEL DATA``: classify a table with an exported network."""
from __future__ import annotations

import argparse
import logging

log = logging.getLogger("predict")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify labelled data with an exported network (model.npz)",
                       description="Push the samples of DATA (CSV/NPZ/HDF5 with the model's feature "
                                   "columns, or one column --feature of projected states) through the "
                                   "network and the head; print accuracy, cross-entropy and the "
                                   "confusion matrix (text, and JSON with --json).")
    p.add_argument("model", help="model file written by 'mfc-hpc train' (model.npz)")
    p.add_argument("data", help="table of samples")
    p.add_argument("--label", default=None,
                   help="label column (default: the one the model was trained with, else 'label')")
    p.add_argument("--feature", default=None,
                   help="one column of already projected states x (instead of the raw features)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the report as JSON to FILE")
    p.add_argument("--noise", action="store_true", help="stochastic network (noise sqrt(2 nu dt) per block)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise")
    p.set_defaults(func=run)


def predict_table(model: str, data: str, label: str | None = None, feature: str | None = None,
                  noise: bool = False, seed: int = 0) -> dict:
    """Report of a model on a table: accuracy, cross-entropy and confusion matrix if the
    table has labels, and the predicted class counts."""
    import numpy as np

    from ..cli import BadInput
    from ..data import read_table, _labels, _numeric
    from ..network import ModelError, ResidualNetwork, classification_report

    try:
        net = ResidualNetwork.load(model)
    except ModelError as e:
        raise BadInput(str(e)) from None
    explicit = label is not None
    if label is None:
        label = ((net.config or {}).get("extra", {}).get("data") or {}).get("label", "label")
    cols = read_table(data)
    path = data
    if feature is not None:
        if feature not in cols:
            raise BadInput(f"predict: no column {feature!r} in {path} (columns: {', '.join(cols)})")
        x = _numeric(feature, cols[feature], path)
    else:
        if net.projection is None:
            raise BadInput("predict: the model has no projection; give --feature COLUMN of states x")
        miss = [f for f in net.projection.feature_names if f not in cols]
        if miss:
            raise BadInput(f"predict: {path} lacks the model's feature column(s) {', '.join(miss)}")
        X = np.column_stack([_numeric(f, cols[f], path) for f in net.projection.feature_names])
        x = net.projection(X)
    xN = net.forward(x, noise=noise, rng=seed)
    pred = net.head.predict(xN)
    rep = {"model": str(model), "data": str(path), "samples": int(x.size),
           "classes": list(net.class_names),
           "predicted_counts": np.bincount(pred, minlength=net.K).tolist()}
    if label in cols:
        lab = _labels(cols[label])
        unknown = sorted(set(lab.tolist()) - set(net.class_names))
        if unknown:
            raise BadInput(f"predict: labels {', '.join(map(repr, unknown))} in {path} are not classes "
                           f"of the model ({', '.join(net.class_names)})")
        y = np.array([net.class_names.index(s) for s in lab.tolist()], dtype=int)
        rep.update(classification_report(net.head, xN, y))
    elif explicit:
        raise BadInput(f"predict: no label column {label!r} in {path} (columns: {', '.join(cols)})")
    return rep


def format_report(rep: dict) -> str:
    """Text form of a prediction report."""
    lines = [f"model {rep['model']} on {rep['data']}: {rep['samples']} samples"]
    if "accuracy" in rep:
        lines.append(f"accuracy      {rep['accuracy']:.4f}")
        lines.append(f"cross-entropy {rep['cross_entropy']:.4f}")
        names = rep["classes"]
        w = max(len(n) for n in names) + 2
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

    from ..output import write_json

    rep = predict_table(args.model, args.data, args.label, args.feature, args.noise, args.seed)
    if MPI.COMM_WORLD.Get_rank() == 0:
        print(format_report(rep), flush=True)
        if args.json:
            write_json(args.json, rep)
    return 0
