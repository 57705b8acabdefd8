"""Training logs: console lines, JSONL and CSV files, and TensorBoard when it is installed."""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any, Optional


class RunLogger:
    """Writes one record per event to ``log.jsonl`` and ``<kind>.csv`` under the run folder."""

    def __init__(self, folder: Path, tensorboard: bool = True, enabled: bool = True) -> None:
        self.folder = folder
        self.enabled = enabled
        self.start = time.time()
        self._csv_columns: dict[str, list[str]] = {}
        self._tb: Optional[Any] = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package
            except ImportError:
                SummaryWriter = None
            if SummaryWriter is not None:
                self._tb = SummaryWriter(str(folder / "tensorboard"))

    def log(self, kind: str, iteration: int, values: dict[str, float], echo: bool = True) -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "iter": iteration, "elapsed_s": round(time.time() - self.start, 2), **values}
        with (self.folder / "log.jsonl").open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        self._append_csv(kind, record)
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self._tb.add_scalar(f"{kind}/{key}", value, iteration)
        if echo:
            shown = " ".join(f"{k}={_fmt(v)}" for k, v in values.items())
            print(f"[{kind} {iteration}] {shown}", flush=True)

    def _append_csv(self, kind: str, record: dict[str, Any]) -> None:
        path = self.folder / f"{kind}.csv"
        columns = self._csv_columns.get(kind)
        if columns is None:
            if path.exists():  # resumed run: keep the existing header
                with path.open() as fh:
                    columns = next(csv.reader(fh), list(record))
            else:
                columns = list(record)
                with path.open("w", newline="") as fh:
                    csv.writer(fh).writerow(columns)
            self._csv_columns[kind] = columns
        with path.open("a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore").writerow(record)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.5g}"
    return str(value)
