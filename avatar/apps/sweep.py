"""A summary over the jobs of a multirun (``avatar SUBCOMMAND -m key=a,b,c``).

Hydra's launchers run the jobs: the basic one in this process, one after the other; plugins
from PyPI run them in parallel on this machine (``hydra/launcher=joblib``) or on a cluster
(``hydra/launcher=submitit_slurm``, ``ray``). :class:`SweepSummary`, a Hydra callback listed in
``conf/_common.yaml``, works the same under each:

- when a job ends, wherever it ran, it writes the job's exit status next to Hydra's record of
  the job (``<job folder>/.hydra/<subcommand>/job_status.json``);
- when the sweep ends, in the process that launched it, it reads every job's status, overrides
  and report (``metrics.json`` for train, ``eval/metrics.json`` for eval, else the job folder's
  ``*report.json``), writes ``<sweep dir>/summary.json`` and prints one line per job.

The command's exit status is the first failing job's (:func:`sweep_statuses`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode

from avatar.io.reports import write_json

SUMMARY_FILE = "summary.json"
STATUS_FILE = "job_status.json"

# The report each subcommand's job leaves in its folder, and the figures shown per job.
REPORTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "train": ("metrics.json", ("psnr", "ssim", "n_gaussians", "train_seconds")),
    "eval": ("eval/metrics.json", ("psnr", "ssim")),
}

_last: list[dict[str, Any]] | None = None  # the rows of the sweep that ended last in this process


def sweep_statuses() -> list[int] | None:
    """Exit statuses of the jobs of the multirun that ended last here (None: no multirun)."""
    return None if _last is None else [row["status"] for row in _last]


def reset() -> None:
    global _last
    _last = None


class SweepSummary(Callback):
    def on_job_end(self, config: Any, job_return: Any = None, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN or job_return is None:
            return
        if job_return.status == JobStatus.COMPLETED:
            value = job_return.return_value
            status = int(value) if isinstance(value, int) else 0
        else:
            status = 1
        record = Path(str(config.hydra.runtime.output_dir)) / str(config.hydra.output_subdir or ".hydra")
        if record.is_dir():
            write_json(record / STATUS_FILE, {"status": status})

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        global _last
        name = str(config.hydra.job.name)
        sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        rows = collect(sweep_dir, name, str(config.hydra.output_subdir or ".hydra"))
        _last = rows
        if not rows:
            return
        write_json(sweep_dir / SUMMARY_FILE, {"subcommand": name, "jobs": rows,
                                               "failed": sum(row["status"] != 0 for row in rows)})
        print("\n".join(table(rows, name)))
        print(f"sweep summary: {sweep_dir / SUMMARY_FILE}")


def collect(sweep_dir: Path, name: str, output_subdir: str) -> list[dict[str, Any]]:
    """One row per job folder of the sweep: its number, overrides, status and report figures."""
    rows = []
    for folder in sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()),
                         key=lambda p: int(p.name)) if sweep_dir.is_dir() else []:
        record = folder / output_subdir
        overrides = _read_overrides(record / "overrides.yaml")
        status_file = record / STATUS_FILE
        # No status: the job never ended (killed, or its worker died).
        status = json.loads(status_file.read_text())["status"] if status_file.is_file() else None
        report_path, figures = _report(folder, name)
        rows.append({
            "job": int(folder.name),
            "folder": str(folder),
            "overrides": overrides,
            "status": 1 if status is None else status,
            "ended": status is not None,
            "report": str(report_path) if report_path else None,
            "figures": figures,
        })
    return rows


def table(rows: list[dict[str, Any]], name: str) -> list[str]:
    """Lines of a plain-text table: job, the swept overrides, status and headline figures."""
    values = [_values(row["overrides"]) for row in rows]
    swept = _swept_keys(values)
    shown = REPORTS.get(name, ("", ()))[1]
    if not shown:  # first few figures any job reported
        shown = tuple(dict.fromkeys(k for row in rows for k in row["figures"]))[:4]
    header = ["job", *swept, "status", *shown]
    body = []
    for row, job in zip(rows, values):
        status = "ok" if row["status"] == 0 else (f"exit {row['status']}" if row["ended"] else "did not end")
        body.append([str(row["job"]), *(job.get(k, "") for k in swept), status,
                     *(_fmt(row["figures"].get(k)) for k in shown)])
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *body]]


def _report(folder: Path, name: str) -> tuple[Path | None, dict[str, float]]:
    known = REPORTS.get(name)
    candidates = [folder / known[0]] if known else sorted(folder.glob("*report.json"))
    for path in candidates:
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict):
                return path, _numbers(data)
    return None, {}


def _numbers(data: dict[str, Any], prefix: str = "", depth: int = 2) -> dict[str, float]:
    """The report's numbers, nested ones as ``outer.inner`` (lists are left out)."""
    found: dict[str, float] = {}
    for key, value in data.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            found[prefix + key] = value
        elif isinstance(value, dict) and depth > 1:
            found.update(_numbers(value, f"{prefix}{key}.", depth - 1))
    return found


def _read_overrides(path: Path) -> list[str]:
    if not path.is_file():
        return []
    from omegaconf import OmegaConf

    return [str(o) for o in OmegaConf.load(path)]


def _values(overrides: list[str]) -> dict[str, str]:
    """``["key=value", ...]`` as ``{key: value}`` (a ``~key`` deletion has no value: left out)."""
    return dict(o.split("=", 1) for o in overrides if "=" in o)


def _swept_keys(jobs: list[dict[str, str]]) -> list[str]:
    """Keys whose value differs between jobs (or that some jobs lack), in command-line order."""
    keys = dict.fromkeys(k for job in jobs for k in job)
    return [k for k in keys if len({job.get(k) for job in jobs}) > 1]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)
