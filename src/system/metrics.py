"""Classification reports: per-class precision, recall, F1 and support, in the course report's table layout."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from ..data.idx import NUM_CLASSES

__all__ = ["report_metrics", "build_report", "format_report"]


def report_metrics(num_classes: int = NUM_CLASSES) -> MetricCollection:
    """Metrics behind a classification report (synced across processes by torchmetrics)."""
    per_class = dict(num_classes=num_classes, average=None)
    return MetricCollection(
        {
            "accuracy": MulticlassAccuracy(num_classes=num_classes, average="micro"),
            "precision": MulticlassPrecision(**per_class),
            "recall": MulticlassRecall(**per_class),
            "f1": MulticlassF1Score(**per_class),
            "confusion": MulticlassConfusionMatrix(num_classes=num_classes),
        }
    )


def build_report(values: dict[str, Tensor], class_names: list[str] | None = None) -> dict:
    """A JSON-ready report from :func:`report_metrics`' computed values.

    ``{"classes": {name: {precision, recall, f1, support}}, "accuracy",
    "macro avg": {...}, "weighted avg": {...}, "confusion": [[...]]}``; the
    averages are over classes, plain (macro) or weighted by support.
    """
    confusion = values["confusion"].long()
    support = confusion.sum(1).double()  # rows: true class
    names = class_names or [str(i) for i in range(len(support))]
    cols = {k: values[k].double() for k in ("precision", "recall", "f1")}
    classes = {
        name: {**{k: cols[k][i].item() for k in cols}, "support": int(support[i])} for i, name in enumerate(names)
    }
    total = support.sum()
    weights = support / total if total > 0 else torch.zeros_like(support)
    return {
        "classes": classes,
        "accuracy": values["accuracy"].item(),
        "macro avg": {**{k: cols[k].mean().item() for k in cols}, "support": int(total)},
        "weighted avg": {**{k: (cols[k] * weights).sum().item() for k in cols}, "support": int(total)},
        "confusion": confusion.tolist(),
    }


def format_report(report: dict, digits: int = 2) -> str:
    """The report as the course report's (and scikit-learn's) text table."""
    names = list(report["classes"]) + ["accuracy", "macro avg", "weighted avg"]
    width = max(len(n) for n in names)
    head = f"{'':>{width}} {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}"
    row = lambda name, r: (  # noqa: E731
        f"{name:>{width}} {r['precision']:>9.{digits}f} {r['recall']:>9.{digits}f} "
        f"{r['f1']:>9.{digits}f} {r['support']:>9}"
    )
    lines = [head, ""] + [row(n, r) for n, r in report["classes"].items()] + [""]
    total = report["macro avg"]["support"]
    lines.append(f"{'accuracy':>{width}} {'':>9} {'':>9} {report['accuracy']:>9.{digits}f} {total:>9}")
    lines += [row("macro avg", report["macro avg"]), row("weighted avg", report["weighted avg"])]
    return "\n".join(lines) + "\n"
