"""``evaluate --plot``: ROC curves by prefix, lead-time histogram and the
calibration curve of the trust score, in one PNG (matplotlib, Agg backend).

It reads only the evaluation's derived figures (:meth:`Evaluation.prefix_points`,
:meth:`Evaluation.prefix_auc`, :meth:`Evaluation.lead_times`), which are
computed on each call: plotting needs no summary first.
"""

from __future__ import annotations

from detectors.offline.evaluation import Evaluation
from detectors.offline.truth_comparison import median


def _roc(points: list[tuple[float, bool]]) -> tuple[list[float], list[float]]:
    ordered = sorted(points, key=lambda p: -p[0])
    pos = sum(1 for _, y in ordered if y) or 1
    neg = (len(ordered) - sum(1 for _, y in ordered if y)) or 1
    fpr, tpr = [0.0], [0.0]
    tp = fp = 0
    for _, y in ordered:
        if y:
            tp += 1
        else:
            fp += 1
        fpr.append(fp / neg)
        tpr.append(tp / pos)
    return fpr, tpr


def plot_report(result: Evaluation, path: str) -> None:
    """Write the three panels to ``path``; needs the ``plot`` extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit(
            "disengage evaluate --plot needs matplotlib: pip install 'disengage[plot]'"
        ) from None
    prefix_points = result.prefix_points()
    prefix_auc, auc_reason = result.prefix_auc()
    lead_times_s, _ = result.lead_times()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    ax = axes[0]
    for key, points in prefix_points.items():
        if points:
            fpr, tpr = _roc(points)
            auc = prefix_auc[key]
            shown = f"AUC {auc}" if auc is not None else f"AUC n/a: {auc_reason}"
            ax.plot(fpr, tpr, label=f"first {float(key):.0%} of events ({shown})")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(
        title="Trust score ROC by session prefix",
        xlabel="false positive rate",
        ylabel="true positive rate",
    )
    if any(prefix_points.values()):
        ax.legend(loc="lower right", fontsize=8)
    ax = axes[1]
    if lead_times_s:
        ax.hist(lead_times_s, bins=40, color="tab:orange")
    lead = median(lead_times_s)
    ax.set(
        title=f"Lead time before exit (median {'n/a' if lead is None else f'{lead} s'})",
        xlabel="seconds from first alert to session end",
        ylabel="alerted non-converters",
    )
    ax = axes[2]
    points = prefix_points.get("0.5", [])
    bins: list[list[tuple[float, bool]]] = [[] for _ in range(10)]
    for score, label in points:
        bins[min(int(score * 10), 9)].append((score, label))
    xs = [sum(s for s, _ in b) / len(b) for b in bins if b]
    ys = [sum(1 for _, y in b if y) / len(b) for b in bins if b]
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.plot(xs, ys, "o-")
    ax.set(
        title="Calibration at 50% prefix",
        xlabel="mean predicted P(goal)",
        ylabel="observed conversion rate",
    )
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
