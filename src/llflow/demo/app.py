"""The demo's application: uploads, the job queue and its worker thread, results on disk — no HTTP
here (:mod:`llflow.demo.server` serves it; tests drive it directly too). Requests run through
:func:`llflow.request.run_request`, as ``llflow enhance`` does.

Why one module of ~550 lines (past the ~500-line guideline): :class:`DemoApp` is one object whose
lock guards the uploads, the jobs, the queue and the running job together, and its methods are the
demo's whole API (the HTTP layer only maps routes onto them); the small image helpers above it are
used only here.
"""
from __future__ import annotations

import collections
import ipaddress
import math
import re
import secrets
import shutil
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple
from urllib.parse import quote

import cv2
import numpy as np
import torch

from ..inference import DEFAULT_TILE_PAD, SAMPLE_TEMPERATURE, UNCERTAINTY_FULL_SCALE, Enhancer
from ..io import IMAGE_EXTENSIONS, ImageReadError, ImageWriteError, image_size, read_image, write_image
from ..preprocess import to_float32, to_uint8
from ..request import Request, run_request

STATIC_DIR = Path(__file__).resolve().parent / "static"
EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
_ID = r"[0-9a-f]{16}"
_STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/index.html": ("index.html", "text/html; charset=utf-8"), "/static/demo.js": ("demo.js", "text/javascript; charset=utf-8"), "/static/demo.css": ("demo.css", "text/css; charset=utf-8")}
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; " "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class DemoError(Exception):
    """A request the demo refuses: an HTTP status and one line for the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = int(status)
        self.message = message


class _Cancelled(Exception):
    """Raised inside the worker when the running job was cancelled."""


# ================================================================================================
# Settings and records


@dataclass
class DemoConfig:
    """Limits and defaults of a demo server."""

    max_upload_bytes: int = 50 * 1024 * 1024
    max_megapixels: float = 40.0
    #: Longer side of the 8-bit previews shown on the page (downloads are always full size).
    preview_max_side: int = 1600
    max_samples: int = 8
    exposure_range: Tuple[float, float] = (-3.0, 3.0)
    temperature_max: float = 1.5
    #: Jobs waiting behind the running one before new ones get "busy, try again".
    max_queued: int = 16
    #: Finished jobs / uploads kept (older ones and their files are deleted).
    keep_jobs: int = 24
    keep_uploads: int = 12
    tile: Optional[int] = None
    tile_pad: int = DEFAULT_TILE_PAD
    seed: int = 0


@dataclass
class Upload:
    """An input image the page uploaded (or picked from the examples), validated on arrival."""

    id: str
    folder: Path
    name: str            # display name (sanitised client file name), never used as a path
    width: int
    height: int
    bit_depth: int
    was_gray: bool
    has_alpha: bool
    created: float = field(default_factory=time.time)

    @property
    def source(self) -> Path:
        return self.folder / "original"

    @property
    def preview(self) -> Path:
        return self.folder / "preview.png"

    def to_json(self) -> Dict[str, Any]:
        return {"id": self.id, "name": self.name, "width": self.width, "height": self.height,
                "bit_depth": self.bit_depth, "gray": self.was_gray, "alpha": self.has_alpha,
                "preview": f"/api/uploads/{self.id}/preview"}


@dataclass
class Job:
    """One enhancement request and its outcome."""

    id: str
    upload: Upload
    temperature: float
    exposure: float
    samples: int
    folder: Path
    state: str = "queued"  # queued | running | done | error | cancelled
    progress: float = 0.0
    stage: str = "waiting for the model"
    error: Optional[str] = None
    files: Dict[str, Tuple[Path, str]] = field(default_factory=dict)  # name -> (path, download name)
    result: Dict[str, Any] = field(default_factory=dict)
    cancel: bool = False
    created: float = field(default_factory=time.time)
    started: Optional[float] = None
    finished: Optional[float] = None


# ================================================================================================
# Helpers


def _new_id() -> str:
    return secrets.token_hex(8)


def _display_name(name: str) -> str:
    """A harmless file name for messages and ``Content-Disposition`` (the base name only)."""
    base = re.split(r"[\\/]", name or "")[-1]
    clean = re.sub(r"[^A-Za-z0-9._ -]+", "_", base).strip(" .")[:80]
    return clean or "image"


def _download_name(upload_name: str, suffix: str) -> str:
    stem = Path(_display_name(upload_name)).stem or "image"
    return f"{stem}{suffix}.png"


def _area_resize(hwc: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale (never upscale) so that the longer side is at most ``max_side``."""
    h, w = hwc.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return hwc
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(hwc, size, interpolation=cv2.INTER_AREA)


def _preview(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """uint8 H×W×3 preview of a uint8/uint16/float RGB image."""
    small = _area_resize(np.ascontiguousarray(rgb), max_side)
    return to_uint8(small)


def _to_hwc(out: torch.Tensor) -> np.ndarray:
    return out[0].detach().clamp(0, 1).permute(1, 2, 0).contiguous().numpy()


def colour_map(std: np.ndarray) -> Tuple[np.ndarray, float]:
    """Uncertainty (H×W std) → RGB uint8 image (inferno colour map) and the std shown as the top
    of the scale (the 99.5th percentile, so a few extreme pixels do not wash the map out)."""
    scale = float(np.percentile(std, 99.5)) if std.size else 0.0
    scale = max(scale, 1e-4)
    grey = np.rint(np.clip(std / scale, 0.0, 1.0) * 255.0).astype(np.uint8)
    bgr = cv2.applyColorMap(grey, cv2.COLORMAP_INFERNO)
    return np.ascontiguousarray(bgr[..., ::-1]), scale


def _is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# ================================================================================================
# The application (no HTTP here: tested directly too)


class DemoApp:
    """Uploads, the job queue and the worker thread; all files under one temporary folder."""

    def __init__(self, enhancer: Enhancer, config: Optional[DemoConfig] = None, *,
                 model_label: str = "", log: Any = None) -> None:
        self.enhancer = enhancer
        self.config = config or DemoConfig()
        self.model_label = model_label or enhancer.source
        self.log = log if log is not None else (lambda message: print(message, file=sys.stderr, flush=True))
        self.root = Path(tempfile.mkdtemp(prefix="llflow-demo-"))
        (self.root / "uploads").mkdir()
        (self.root / "jobs").mkdir()
        self.static = {route: (STATIC_DIR.joinpath(name).read_bytes(), ctype)
                       for route, (name, ctype) in _STATIC.items()}
        self.examples = self._load_examples()
        self.uploads: "collections.OrderedDict[str, Upload]" = collections.OrderedDict()
        self.jobs: "collections.OrderedDict[str, Job]" = collections.OrderedDict()
        self.queue: "collections.deque[Job]" = collections.deque()
        self.running: Optional[Job] = None
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.stopping = False
        self.worker = threading.Thread(target=self._work, name="llflow-demo-worker", daemon=True)
        self.worker.start()

    # -------------------------------------------------------------------------- start-up data
    def _load_examples(self) -> Dict[str, Dict[str, Any]]:
        """Bundled example images, read into memory once (bytes and a PNG thumbnail)."""
        examples: Dict[str, Dict[str, Any]] = {}
        if not EXAMPLES_DIR.is_dir():
            return examples
        for path in sorted(EXAMPLES_DIR.iterdir()):
            if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
                continue
            try:
                image = read_image(path)
            except ImageReadError:
                continue
            thumb = _preview(image.rgb, 160)
            ok, png = cv2.imencode(".png", np.ascontiguousarray(thumb[..., ::-1]))
            if ok:
                examples[path.name] = {"data": path.read_bytes(), "thumb": png.tobytes(),
                                       "width": image.rgb.shape[1], "height": image.rgb.shape[0]}
        return examples

    def info(self) -> Dict[str, Any]:
        enhancer = self.enhancer
        cfg = self.config
        return {
            "model": self.model_label,
            "architecture": enhancer.architecture,
            "parameters": enhancer.net.num_parameters(),
            "device": str(enhancer.device),
            "precision": enhancer.precision,
            "engine": getattr(enhancer, "engine", "reference"),
            "threads": torch.get_num_threads() if enhancer.device.type == "cpu" else None,
            "max_upload_bytes": cfg.max_upload_bytes,
            "max_megapixels": cfg.max_megapixels,
            "max_samples": cfg.max_samples,
            "exposure_range": list(cfg.exposure_range),
            "temperature_max": cfg.temperature_max,
            "sample_temperature": SAMPLE_TEMPERATURE,
            "formats": [ext.lstrip(".") for ext in IMAGE_EXTENSIONS],
            "examples": [{"name": name, "thumb": f"/api/examples/{quote(name)}/thumb",
                          "width": ex["width"], "height": ex["height"]}
                         for name, ex in self.examples.items()],
        }

    # -------------------------------------------------------------------------- uploads
    def add_upload(self, data: bytes, name: str) -> Upload:
        """Validate an uploaded image and keep it; raises :class:`DemoError` with a one-line message."""
        display = _display_name(name)
        if not data:
            raise DemoError(400, f"'{display}' is empty (0 bytes); choose an image file")
        if len(data) > self.config.max_upload_bytes:
            raise DemoError(413, self._too_large(len(data)))
        size = image_size(data)  # refuse decompression bombs before decoding
        if size is not None:
            self._check_pixels(display, *size)
        upload_id = _new_id()
        folder = self.root / "uploads" / upload_id
        folder.mkdir()
        try:
            (folder / "original").write_bytes(data)
            try:
                image = read_image(folder / "original")
            except ImageReadError as exc:
                raise DemoError(415, str(exc).replace(f"'{folder / 'original'}'", f"'{display}'")) from None
            height, width = image.rgb.shape[:2]
            self._check_pixels(display, width, height)
            write_image(folder / "preview.png", _preview(image.rgb, self.config.preview_max_side))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        upload = Upload(upload_id, folder, display, width, height, image.bit_depth, image.was_gray,
                        image.alpha is not None)
        with self.lock:
            self.uploads[upload_id] = upload
            self._evict()
        return upload

    def add_example(self, name: str) -> Upload:
        example = self.examples.get(name)
        if example is None:
            raise DemoError(404, f"no bundled example called '{_display_name(name)}'")
        return self.add_upload(example["data"], name)

    def _too_large(self, size: int) -> str:
        limit = self.config.max_upload_bytes / 1024**2
        return (f"the file is {size / 1024**2:.1f} MB, over this demo's {limit:g} MB upload limit; "
                "use a smaller file (or restart the demo with a larger --max-upload-mb)")

    def _check_pixels(self, display: str, width: int, height: int) -> None:
        megapixels = width * height / 1e6
        if width <= 0 or height <= 0:
            raise DemoError(415, f"'{display}' declares an empty image ({width}×{height}); re-export it")
        if megapixels > self.config.max_megapixels:
            raise DemoError(413, f"'{display}' is {width}×{height} ({megapixels:.0f} MP), over this demo's "
                                 f"{self.config.max_megapixels:g} MP limit; downscale it (or use llflow enhance, "
                                 "which tiles any size)")

    # -------------------------------------------------------------------------- jobs
    def submit(self, upload_id: str, temperature: float = 0.0, exposure: float = 0.0, samples: int = 1) -> Job:
        cfg = self.config
        try:
            temperature, exposure, samples = float(temperature), float(exposure), int(samples)
        except (TypeError, ValueError):
            raise DemoError(400, "temperature and exposure must be numbers and samples an integer") from None
        if not (math.isfinite(temperature) and 0 <= temperature <= cfg.temperature_max):
            raise DemoError(400, f"temperature must be between 0 and {cfg.temperature_max:g}")
        low, high = cfg.exposure_range
        if not (math.isfinite(exposure) and low <= exposure <= high):
            raise DemoError(400, f"exposure must be between {low:+g} and {high:+g} EV")
        if not 1 <= samples <= cfg.max_samples:
            raise DemoError(400, f"samples must be between 1 and {cfg.max_samples}")
        with self.lock:
            upload = self.uploads.get(upload_id)
            if upload is None:
                raise DemoError(404, "that image is no longer on the server (it was replaced by newer "
                                     "uploads or the demo restarted); upload it again")
            if len(self.queue) >= cfg.max_queued:
                raise DemoError(503, f"the demo is busy ({len(self.queue)} jobs waiting); try again in a moment")
            job_id = _new_id()
            folder = self.root / "jobs" / job_id
            folder.mkdir()
            job = Job(job_id, upload, temperature, exposure, samples, folder)
            self.jobs[job_id] = job
            self.uploads.move_to_end(upload.id)  # recently used: evicted last
            self.queue.append(job)
            self._evict()
            self.wake.notify_all()
        return job

    def cancel(self, job_id: str) -> Dict[str, Any]:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                raise DemoError(404, "no such job (it finished long ago or the demo restarted)")
            if job.state == "queued":
                self.queue.remove(job)
                job.state, job.finished, job.stage = "cancelled", time.time(), "cancelled"
            elif job.state == "running":
                job.cancel = True
        return self.status(job_id)

    def status(self, job_id: str) -> Dict[str, Any]:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                raise DemoError(404, "no such job (it finished long ago or the demo restarted)")
            position = None
            if job.state == "queued":
                position = list(self.queue).index(job) + (1 if self.running is not None else 0)
            now = time.time()
            return {
                "id": job.id, "state": job.state, "position": position,
                "progress": round(job.progress, 4), "stage": job.stage, "error": job.error,
                "upload": job.upload.id,
                "params": {"temperature": job.temperature, "exposure": job.exposure, "samples": job.samples},
                "elapsed": round((job.finished or now) - job.started, 2) if job.started else None,
                "result": dict(job.result) if job.state == "done" else None,
            }

    def job_file(self, job_id: str, name: str) -> Tuple[Path, str]:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None or name not in job.files:
                raise DemoError(404, "no such result (it was replaced by newer jobs or the demo restarted)")
            return job.files[name]

    def upload_preview(self, upload_id: str) -> Path:
        with self.lock:
            upload = self.uploads.get(upload_id)
            if upload is None:
                raise DemoError(404, "no such image (it was replaced by newer uploads or the demo restarted)")
            return upload.preview

    def _evict(self) -> None:
        """Drop the oldest finished jobs and unused uploads beyond the caps (lock held)."""
        finished = [j for j in self.jobs.values() if j.state in ("done", "error", "cancelled")]
        for job in finished[:max(0, len(finished) - self.config.keep_jobs)]:
            del self.jobs[job.id]
            shutil.rmtree(job.folder, ignore_errors=True)
        pending = {j.upload.id for j in self.jobs.values() if j.state in ("queued", "running")}
        extra = len(self.uploads) - self.config.keep_uploads
        for upload in list(self.uploads.values()):
            if extra <= 0:
                break
            if upload.id in pending:
                continue
            del self.uploads[upload.id]
            shutil.rmtree(upload.folder, ignore_errors=True)
            extra -= 1

    # -------------------------------------------------------------------------- worker
    def _work(self) -> None:
        while True:
            with self.lock:
                while not self.queue and not self.stopping:
                    self.wake.wait()
                if self.stopping:
                    return
                job = self.queue.popleft()
                job.state, job.started, job.stage = "running", time.time(), "starting"
                self.running = job
            try:
                self._run(job)
                state, error = "done", None
            except _Cancelled:
                state, error = "cancelled", None
            except ImageReadError as exc:
                state, error = "error", str(exc).replace(f"'{job.upload.source}'", f"'{job.upload.name}'")
            except MemoryError:
                state, error = "error", ("out of memory while enhancing this image; try a smaller image, "
                                         "fewer samples, or restart the demo with --tile 512")
            except (ValueError, RuntimeError, ImageWriteError, OSError) as exc:
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                state, error = "error", f"enhancing failed: {message}"
            except Exception as exc:  # keep serving whatever happens; the console gets the details
                self.log("llflow demo: internal error:\n" + traceback.format_exc())
                state, error = "error", f"internal error ({type(exc).__name__}: {exc}); see the server console"
            with self.lock:
                job.state, job.error, job.finished = state, error, time.time()
                if state == "done":
                    job.progress, job.stage = 1.0, "done"
                elif state == "cancelled":
                    job.stage = "cancelled"
                self.running = None
                self._evict()
            if state == "error":
                self.log(f"llflow demo: job {job.id} ({job.upload.name}): {error}")

    def _run(self, job: Job) -> None:
        """Enhance (tiled as needed), sample, build the uncertainty map (:func:`llflow.request.run_request`),
        write every file."""
        cfg, enhancer = self.config, self.enhancer
        n = job.samples
        request = Request(temperature=job.temperature, samples=n, exposure=job.exposure, seed=cfg.seed,
                          uncertainty=n > 1, tile=cfg.tile, tile_pad=cfg.tile_pad)
        main_is_sample = n > 1 and job.temperature > 0   # then the result is sample 0
        stages = {"exposure": f"finding the {job.exposure:+g} EV exposure shift", "samples": f"{n} samples",
                  "enhancing": "enhancing"}
        units = (0 if main_is_sample else 1) + (1 if n > 1 else 0) + (1 if job.exposure else 0) + 0.5
        done = [-1.0]  # the first stage starts at 0

        def step(stage: str, fraction: float = 0.0) -> None:
            if job.cancel or self.stopping:
                raise _Cancelled()
            job.stage = stage
            job.progress = min(0.99, (max(done[0], 0.0) + fraction) / units)

        class TileProgress:
            def __init__(self, total: int, stage: str) -> None:
                self.total, self.count, self.stage = max(total, 1), 0, stage
                step(f"{stage} (tile 1/{self.total})")

            def update(self, k: int = 1) -> None:
                self.count += k
                step(f"{self.stage} (tile {min(self.count + 1, self.total)}/{self.total})", self.count / self.total)

            def close(self) -> None:
                pass

        def on_stage(name: str) -> Any:
            done[0] += 1
            label = stages.get(name, name)
            step(label)
            return lambda total, _desc: TileProgress(total, label)

        step("reading the image")
        image = read_image(job.upload.source)
        low = torch.from_numpy(to_float32(image.rgb)).permute(2, 0, 1)[None]
        outcome = run_request(enhancer, low, request, stage=on_stage)
        notes = [note[0].upper() + note[1:] + "." for note in (outcome.exposure_note, outcome.out_of_range_note) if note]
        if n > 1 and job.temperature == 0:
            notes.append(f"Samples and the uncertainty map use τ = {request.sample_temperature:g} (at τ = 0 all "
                         "samples would be the same image).")
        samples, result = outcome.samples, outcome.main
        assert result is not None
        achieved = outcome.exposure.achieved_ev if outcome.exposure is not None else 0.0
        sample_tau = request.sample_temperature

        step("writing the results", 0.0)
        files: Dict[str, Tuple[Path, str]] = {}
        folder, name = job.folder, job.upload.name

        def save(key: str, rgb: np.ndarray, download: str, full: bool = True, **kwargs: Any) -> None:
            if full:
                files[key] = (write_image(folder / f"{key}.png", rgb, **kwargs), download)
            preview = _preview(rgb, cfg.preview_max_side)
            files[f"{key}-preview"] = (write_image(folder / f"{key}-preview.png", preview), download)

        layout = {"alpha": image.alpha, "gray": image.was_gray, "bit_depth": image.bit_depth}
        save("result", _to_hwc(result), _download_name(name, "_llflow"), **layout)
        sample_items = []
        for i, out in enumerate(samples):
            save(f"sample-{i}", _to_hwc(out), _download_name(name, f"_llflow_s{i}"), **layout)
            sample_items.append({"index": i, "preview": self._url(job, f"sample-{i}-preview"),
                                 "download": self._url(job, f"sample-{i}", True)})
        uncertainty = None
        if outcome.uncertainty is not None:
            std = outcome.uncertainty
            coloured, top = colour_map(std)
            save("uncertainty", coloured, _download_name(name, "_llflow_uncertainty"))
            files["uncertainty-raw"] = (
                write_image(folder / "uncertainty-raw.png", outcome.uncertainty16, bit_depth=16),
                _download_name(name, "_llflow_uncertainty16"))
            uncertainty = {"preview": self._url(job, "uncertainty-preview"),
                           "download": self._url(job, "uncertainty", True),
                           "raw": self._url(job, "uncertainty-raw", True),
                           "scale": round(top, 5), "mean": round(float(std.mean()), 5),
                           "raw_full_scale": UNCERTAINTY_FULL_SCALE}
        depth = image.bit_depth
        with self.lock:
            job.files = files
            job.result = {
                "width": image.rgb.shape[1], "height": image.rgb.shape[0], "bit_depth": depth,
                "download": self._url(job, "result", True), "preview": self._url(job, "result-preview"),
                "download_name": files["result"][1],
                "format": f"{depth}-bit PNG" + (" (grey)" if image.was_gray else "")
                          + (" with alpha" if image.alpha is not None else ""),
                "achieved_ev": round(achieved, 3), "samples": sample_items, "sample_temperature":
                    sample_tau if samples else None, "uncertainty": uncertainty, "notes": notes,
                "input_mean": round(float(low.mean()), 5), "result_mean": round(float(result.mean()), 5),
                "out_of_range": round(outcome.out_of_range, 6),
            }

    @staticmethod
    def _url(job: Job, name: str, download: bool = False) -> str:
        return f"/api/jobs/{job.id}/files/{name}" + ("?download=1" if download else "")

    # -------------------------------------------------------------------------- shutdown
    def close(self) -> None:
        """Stop the worker (a running job stops at its next tile/stage) and delete the temporary folder."""
        with self.lock:
            self.stopping = True
            for job in self.queue:
                job.state = "cancelled"
            self.queue.clear()
            self.wake.notify_all()
        self.worker.join(timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)
