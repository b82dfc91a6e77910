"""``disengage evaluate``: its inputs and its plot path, checked before the run.

A run over a large file takes minutes; a wrong ``--labels`` or ``--truth``
file, or a ``--plot`` path that cannot be written, must stop the command
before it, in one line with exit code 2 (:class:`UsageError`), never with a
traceback after it. The labels and the ground truth are small, so they are
read whole here; the events are streamed later.
"""

from __future__ import annotations

import importlib.util
import os

from detectors.offline.outcome_labels import read_labels
from detectors.simulation.ground_truth import GroundTruth, TruthError
from stream.commands.arguments import UsageError


def _open_small(path: str, what: str) -> list[str]:
    if os.path.isdir(path):
        raise UsageError(f"cannot read {what} {path}: it is a directory")
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readlines()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None


def read_labels_file(path: str) -> dict[str, bool]:
    """The ``session_id,converted`` CSV of ``--labels``."""
    try:
        return read_labels(_open_small(path, "--labels"))
    except ValueError as exc:
        raise UsageError(f"--labels {path}: {exc}") from None


def read_truth_file(path: str, given: bool = True) -> GroundTruth:
    """The simulator ground truth at ``path`` (``given``: named by
    ``--truth``, else found next to the events). An events file or a CSV is
    refused with what it looks like."""
    what = "--truth" if given else "ground truth"
    try:
        return GroundTruth.from_jsonl(_open_small(path, what))
    except TruthError as exc:
        raise UsageError(f"{what} {path} is not simulator ground truth: {exc}") from None


def check_plot_target(path: str) -> None:
    """Fail now when the ``--plot`` PNG cannot be written: matplotlib
    missing, a folder that does not exist or cannot be written, a path that
    is a directory, or a file type matplotlib cannot write."""
    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--plot needs matplotlib: pip install 'disengage[plot]'")
    if os.path.isdir(path):
        raise UsageError(f"cannot write --plot {path}: it is a directory")
    folder = os.path.dirname(os.path.realpath(path))  # where a symlink really points
    if not os.path.isdir(folder):
        raise UsageError(f"cannot write --plot {path}: No such file or directory")
    exists = os.path.exists(path)
    if not os.access(path if exists else folder, os.W_OK):
        raise UsageError(f"cannot write --plot {path}: Permission denied")
    suffix = os.path.splitext(path)[1].lower().lstrip(".")
    if suffix:
        from matplotlib.figure import Figure

        kinds = Figure().canvas.get_supported_filetypes()
        if suffix not in kinds:
            raise UsageError(
                f"cannot write --plot {path}: matplotlib writes {', '.join(sorted(kinds))}, "
                f"not {suffix}"
            )
