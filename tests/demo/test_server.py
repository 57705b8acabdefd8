"""``llflow demo``: the HTTP API in-process (uploads, limits, queue, 16-bit downloads, safety) and
the whole thing end to end in headless Chromium (Debian's /usr/bin/chromium driven by Playwright).

The browser test skips locally when Playwright or Chromium is missing and fails under ``CI=true``
(``.ci/run`` installs both). Its screenshot is written to the test's tmp folder and, when
``LLFLOW_TEST_ARTIFACTS`` is set, copied there.
"""
from __future__ import annotations

import dataclasses
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

import cv2
import numpy as np
import pytest
import torch

import llflow
from llflow.cli import main
from llflow.demo.server import DemoApp, DemoConfig, DemoServer, colour_map
from llflow.io import image_size
from llflow.inference import load_model

from ..conftest import tiny_llflow

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
#: A small, dark, real photo in ../shared (326×326 BMP, mean 0.05): one model call takes ~1 s on one thread.
BROWSER_PHOTO = ("data", "real-lowlight", "lime", "6.bmp")
#: A bundled example photo (LOL eval15 1.png, downscaled; src/llflow/examples/CREDITS.md).
EXAMPLES = REPO / "src" / "llflow" / "examples"
CROP_SOURCE = EXAMPLES / "lol_1.png"


pytestmark = pytest.mark.usefixtures("one_thread")


def _luminance(rgb: np.ndarray) -> float:
    """Mean Rec.601 luma of an RGB uint8/uint16 array, in [0, 1]."""
    scale = 65535.0 if rgb.dtype == np.uint16 else 255.0
    return float(((rgb[..., :3].astype(np.float64) / scale) @ np.array([0.299, 0.587, 0.114])).mean())


def _read_rgb(data_or_path: Any) -> np.ndarray:
    if isinstance(data_or_path, (str, Path)):
        data_or_path = Path(data_or_path).read_bytes()
    image = cv2.imdecode(np.frombuffer(data_or_path, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None, "not a decodable image"
    return np.ascontiguousarray(image[..., 2::-1]) if image.ndim == 3 else image


# ================================================================================================
# In-process server


class Client:
    """Minimal HTTP client with full control over headers (urllib adds its own)."""

    def __init__(self, port: int) -> None:
        self.port = port

    def request(self, method: str, path: str, body: Optional[bytes] = None,
                headers: Optional[Dict[str, str]] = None) -> Tuple[int, Dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            headers = dict(headers or {})
            conn.putrequest(method, path, skip_host="Host" in headers, skip_accept_encoding=True)
            if body is not None and "Content-Length" not in headers:
                headers["Content-Length"] = str(len(body))
            for key, value in headers.items():
                conn.putheader(key, value)
            conn.endheaders()
            if body:
                conn.send(body)
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, payload: Any = None, **kwargs: Any) -> Tuple[int, Any]:
        body = kwargs.pop("body", None)
        if payload is not None:
            body = json.dumps(payload).encode()
        status, _headers, data = self.request(method, path, body, **kwargs)
        return status, json.loads(data)

    def wait(self, job_id: str, timeout: float = 120.0) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, data = self.json("GET", f"/api/jobs/{job_id}")
            assert status == 200, data
            if data["state"] in ("done", "error", "cancelled"):
                return data
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} did not finish in {timeout} s: {data}")


@pytest.fixture(scope="module")
def enhancer() -> llflow.Enhancer:
    # A private copy: tests patch its methods without touching load_model's cached object.
    return dataclasses.replace(load_model("default", "cpu"))


@pytest.fixture()
def demo(enhancer: llflow.Enhancer) -> Iterator[Tuple[DemoApp, Client]]:
    app = DemoApp(enhancer, DemoConfig(max_upload_bytes=2 * 1024 * 1024, preview_max_side=64),
                  model_label="test", log=lambda message: None)
    server = DemoServer(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield app, Client(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        app.close()
    assert not app.root.exists(), "the temporary folder must be deleted on shutdown"


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    """A 96×128 crop of a real low-light photo (uint8 RGB), from the bundled examples."""
    rgb = _read_rgb(CROP_SOURCE)
    return np.ascontiguousarray(rgb[150:246, 250:378])


def _png(rgb: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    assert ok
    return data.tobytes()


def test_page_info_and_examples(demo: Tuple[DemoApp, Client]) -> None:
    app, client = demo
    status, headers, page = client.request("GET", "/")
    assert status == 200 and b"/static/demo.js" in page
    assert "default-src 'none'" in headers["content-security-policy"]
    for asset in ("/static/demo.js", "/static/demo.css"):
        assert client.request("GET", asset)[0] == 200
    assert b"http://" not in page and b"https://" not in page, "the page must not load anything from the network"
    status, info = client.json("GET", "/api/info")
    assert status == 200 and info["architecture"] == "LOL_smallNet"
    assert info["max_upload_bytes"] == 2 * 1024 * 1024
    names = [ex["name"] for ex in info["examples"]]
    assert "lol_1.png" in names
    status, headers, thumb = client.request("GET", info["examples"][0]["thumb"])
    assert status == 200 and headers["content-type"] == "image/png" and max(_read_rgb(thumb).shape[:2]) <= 160
    status, upload = client.json("POST", "/api/uploads?example=lol_1.png")
    assert status == 201 and (upload["width"], upload["height"]) == (400, 267)
    preview = _read_rgb(client.request("GET", upload["preview"])[2])
    assert max(preview.shape[:2]) == 64, "previews are downscaled to preview_max_side"


def test_bad_inputs_get_one_line_and_the_server_keeps_serving(demo: Tuple[DemoApp, Client]) -> None:
    app, client = demo
    status, data = client.json("POST", "/api/uploads?name=notes.txt", body=b"just some text\n")
    assert status == 415 and data["error"].startswith("cannot read image 'notes.txt': not an image")
    jpeg = (EXAMPLES / "sci_252.jpg").read_bytes()
    status, data = client.json("POST", "/api/uploads?name=broken.jpg", body=jpeg[: len(jpeg) // 2])
    assert status == 415 and "truncated" in data["error"] and "broken.jpg" in data["error"]
    status, data = client.json("POST", "/api/uploads?name=empty.png", body=b"")
    assert status == 400 and "empty" in data["error"]
    # A huge Content-Length is refused from the header alone: no body is sent, none is read.
    start = time.monotonic()
    status, data = client.json("POST", "/api/uploads?name=huge.jpg", headers={"Content-Length": str(10**10)})
    assert status == 413 and "upload limit" in data["error"] and time.monotonic() - start < 5
    status, data = client.json("POST", "/api/uploads?name=x.jpg", headers={"Transfer-Encoding": "chunked"})
    assert status == 411
    # A small file declaring a huge image (decompression bomb) is refused before decoding.
    header = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + (100000).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00"
    status, data = client.json("POST", "/api/uploads?name=bomb.png", body=header + b"\x00" * 64)
    assert status == 413 and "MP limit" in data["error"]
    status, data = client.json("POST", "/api/jobs", {"upload": "0" * 16})
    assert status == 404 and "upload it again" in data["error"]
    status, data = client.json("POST", "/api/jobs", body=b"not json")
    assert status == 400
    assert client.json("GET", "/api/info")[0] == 200
    assert not list((app.root / "uploads").iterdir()), "rejected uploads leave no files"


def test_requests_never_name_files(demo: Tuple[DemoApp, Client]) -> None:
    """Every file is addressed by a server id; paths, dot-dots and foreign hosts get nothing."""
    app, client = demo
    for path in ("/static/../server.py", "/static/%2e%2e/server.py", "/../../etc/passwd",
                 "/api/jobs/../../../etc/passwd", "/api/jobs/0123456789abcdef/files/..%2fresult",
                 "/api/uploads/0123456789abcdef/preview", "/api/examples/..%2f..%2fcli.py/thumb"):
        status, _headers, body = client.request("GET", path)
        assert status == 404, (path, status)
        assert b"import" not in body and b"root:" not in body
    status, data = client.json("POST", "/api/uploads?example=../weights/llflow_default.safetensors")
    assert status == 404 and "no bundled example" in data["error"]
    status, data = client.json("GET", "/api/info", headers={"Host": "attacker.example:7860"})
    assert status == 403
    status, data = client.json("POST", "/api/uploads?example=lol_1.png",
                               headers={"Origin": "http://attacker.example", "Content-Length": "0"})
    assert status == 403
    assert client.json("GET", "/api/info", headers={"Host": f"localhost:{client.port}"})[0] == 200


def test_16bit_in_16bit_out_tiled_like_the_api(demo: Tuple[DemoApp, Client], crop: np.ndarray,
                                               enhancer: llflow.Enhancer) -> None:
    """A 16-bit PNG gives a 16-bit full-size result equal to the Python API's, tiles reported as progress."""
    app, client = demo
    app.config.tile = 64
    deep = np.clip(crop.astype(np.int64) * 257 + 100, 0, 65535).astype(np.uint16)  # not 8-bit data
    status, upload = client.json("POST", "/api/uploads?name=deep%20photo.png", body=_png(deep))
    assert status == 201 and upload["bit_depth"] == 16 and upload["name"] == "deep photo.png"

    seen = []
    original = enhancer.run

    def recording_run(*args: Any, **kwargs: Any) -> torch.Tensor:
        factory = kwargs["progress"]

        def wrapped(total: int, desc: str) -> Any:
            bar = factory(total, desc)
            update = bar.update

            def record(k: int = 1) -> None:
                update(k)
                job = app.running
                seen.append((total, job.progress, job.stage))
            bar.update = record
            return bar
        kwargs["progress"] = wrapped
        return original(*args, **kwargs)

    enhancer.run = recording_run  # type: ignore[method-assign]
    try:
        status, job = client.json("POST", "/api/jobs", {"upload": upload["id"], "exposure": 0, "samples": 1})
        assert status == 202
        done = client.wait(job["id"])
    finally:
        del enhancer.run
    assert done["state"] == "done", done
    result = done["result"]
    assert (result["width"], result["height"], result["bit_depth"]) == (128, 96, 16)
    status, headers, body = client.request("GET", result["download"])
    assert status == 200 and 'filename="deep photo_llflow.png"' in headers["content-disposition"]
    out = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED)
    assert out.dtype == np.uint16 and out.shape == (96, 128, 3)
    expected = llflow.enhance(deep, model=enhancer, tile=64)
    assert np.abs(out[..., ::-1].astype(np.int64) - expected.astype(np.int64)).max() <= 1
    assert _luminance(out[..., ::-1]) > _luminance(deep) + 0.1
    preview = cv2.imdecode(np.frombuffer(client.request("GET", result["preview"])[2], np.uint8), cv2.IMREAD_UNCHANGED)
    assert preview.dtype == np.uint8 and max(preview.shape[:2]) == 64
    assert len(seen) == 4 and all(total == 4 for total, _p, _s in seen), seen  # 2×2 tiles of 64
    progress = [p for _t, p, _s in seen]
    assert progress == sorted(progress) and 0 < progress[0] < progress[-1] < 1
    assert "tile 2/4" in seen[0][2]


def test_samples_uncertainty_and_exposure(demo: Tuple[DemoApp, Client], crop: np.ndarray) -> None:
    app, client = demo
    status, upload = client.json("POST", "/api/uploads?name=crop.png", body=_png(crop))
    status, job = client.json("POST", "/api/jobs", {"upload": upload["id"], "exposure": 1, "samples": 3,
                                                    "temperature": 0.0})
    done = client.wait(job["id"])
    assert done["state"] == "done", done
    result = done["result"]
    assert len(result["samples"]) == 3 and result["sample_temperature"] == 0.8
    assert any("τ = 0.8" in note for note in result["notes"])
    samples = [_read_rgb(client.request("GET", s["download"])[2]) for s in result["samples"]]
    assert all(s.shape == (96, 128, 3) for s in samples)
    assert not np.array_equal(samples[0], samples[1])
    colour = _read_rgb(client.request("GET", result["uncertainty"]["download"])[2])
    assert colour.shape == (96, 128, 3) and colour.std() > 0
    raw = cv2.imdecode(np.frombuffer(client.request("GET", result["uncertainty"]["raw"])[2], np.uint8),
                       cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == (96, 128)
    assert abs(result["achieved_ev"] - 1.0) < 0.3
    # Against the official output of the same image: +1 EV is brighter.
    status, job0 = client.json("POST", "/api/jobs", {"upload": upload["id"]})
    plain = client.wait(job0["id"])["result"]
    brighter = _luminance(_read_rgb(client.request("GET", result["download"])[2]))
    official = _luminance(_read_rgb(client.request("GET", plain["download"])[2]))
    assert brighter > official + 0.02
    status, data = client.json("POST", "/api/jobs", {"upload": upload["id"], "samples": 99})
    assert status == 400 and "samples" in data["error"]
    status, data = client.json("POST", "/api/jobs", {"upload": upload["id"], "exposure": "nan"})
    assert status == 400


def test_second_request_is_queued_not_dropped(demo: Tuple[DemoApp, Client], crop: np.ndarray,
                                              enhancer: llflow.Enhancer) -> None:
    app, client = demo
    gate = threading.Event()
    original = enhancer.run

    def gated(*args: Any, **kwargs: Any) -> torch.Tensor:
        assert gate.wait(60)
        return original(*args, **kwargs)

    enhancer.run = gated  # type: ignore[method-assign]
    try:
        status, upload = client.json("POST", "/api/uploads?name=crop.png", body=_png(crop))
        first = client.json("POST", "/api/jobs", {"upload": upload["id"]})[1]
        deadline = time.monotonic() + 30
        while client.json("GET", f"/api/jobs/{first['id']}")[1]["state"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        second = client.json("POST", "/api/jobs", {"upload": upload["id"], "exposure": 0.5})[1]
        third = client.json("POST", "/api/jobs", {"upload": upload["id"], "exposure": -0.5})[1]
        assert (second["state"], second["position"]) == ("queued", 1)
        assert (third["state"], third["position"]) == ("queued", 2)
        cancelled = client.json("DELETE", f"/api/jobs/{third['id']}")[1]
        assert cancelled["state"] == "cancelled"
        assert client.json("GET", f"/api/jobs/{first['id']}")[1]["state"] == "running"
        gate.set()
        assert client.wait(first["id"])["state"] == "done"
        second_done = client.wait(second["id"])
        assert second_done["state"] == "done" and second_done["params"]["exposure"] == 0.5
    finally:
        gate.set()
        del enhancer.run


def test_retention_cap_deletes_old_files(enhancer: llflow.Enhancer, crop: np.ndarray) -> None:
    app = DemoApp(enhancer, DemoConfig(keep_uploads=2), log=lambda message: None)
    try:
        uploads = [app.add_upload(_png(crop), f"{i}.png") for i in range(4)]
        assert list(app.uploads) == [u.id for u in uploads[2:]]
        assert not uploads[0].folder.exists() and uploads[3].folder.exists()
        assert all(p.resolve().is_relative_to(app.root.resolve()) for p in app.root.rglob("*"))
    finally:
        app.close()
    assert not app.root.exists()


def test_out_of_range_result_is_reported_in_the_job(crop: np.ndarray) -> None:
    from ..inference.test_enhancer import ConstantEngine

    broken = llflow.Enhancer(tiny_llflow(), torch.device("cpu"), engine=ConstantEngine(bad=0.05))
    app = DemoApp(broken, DemoConfig(), log=lambda message: None)
    try:
        upload = app.add_upload(_png(crop), "crop.png")
        job = app.submit(upload.id)
        deadline = time.monotonic() + 60
        while app.status(job.id)["state"] in ("queued", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        status = app.status(job.id)
        assert status["state"] == "done", status
        assert status["result"]["out_of_range"] == pytest.approx(0.05, abs=0.01)
        notes = [note for note in status["result"]["notes"] if "before clamping" in note]
        assert len(notes) == 1 and "% of the pixels" in notes[0]
    finally:
        app.close()


def test_probe_size_and_colour_map() -> None:
    rgb = np.zeros((37, 53, 3), np.uint8)
    for ext in (".png", ".jpg", ".bmp", ".webp"):
        ok, data = cv2.imencode(ext, rgb)
        assert ok and image_size(data.tobytes()) == (53, 37), ext
    assert image_size(b"just text") is None
    coloured, top = colour_map(np.linspace(0, 0.1, 100, dtype=np.float32).reshape(10, 10))
    assert coloured.shape == (10, 10, 3) and coloured.dtype == np.uint8 and 0.09 < top <= 0.1


def test_cli_checks_arguments_before_loading(capsys: pytest.CaptureFixture) -> None:
    assert main(["demo", "--port", "70000"]) == 1
    assert "--port must be 0..65535" in capsys.readouterr().err
    assert main(["demo", "--max-upload-mb", "0"]) == 1


# ================================================================================================
# End to end in a real browser


@pytest.fixture()
def browser_api() -> Any:
    """Playwright's sync API, or skip (locally) / fail (CI=true) saying what is missing."""
    return _browser_or_skip()


def _browser_or_skip() -> Any:
    """Playwright's sync API, or skip (locally) / fail (CI=true) saying what is missing."""
    missing = []
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
        missing.append("the Python package playwright (pip install -e '.[browser-test]')")
    if not CHROMIUM.exists():
        missing.append(f"Debian's chromium at {CHROMIUM} (apt-get install --no-install-recommends chromium)")
    if missing:
        reason = "browser test needs " + " and ".join(missing)
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason + " (CI=true: installing them is .ci/run's job)")
        pytest.skip(reason)
    return sync_playwright


@pytest.fixture()
def demo_process(tmp_path: Path) -> Iterator[Tuple[str, subprocess.Popen, list]]:
    """``llflow demo`` in a subprocess on a free port, one CPU thread, 2 MB upload limit."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "llflow", "demo", "--port", "0", "--threads", "1",
                             "--max-upload-mb", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, cwd=tmp_path)
    lines: list = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    url = None
    while url is None:
        for line in list(lines):
            if "serving http://" in line:
                url = line.split("serving ", 1)[1].split()[0]
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("llflow demo did not start:\n" + "".join(lines))
        time.sleep(0.1)
    try:
        yield url, proc, lines
    finally:
        if proc.poll() is None:  # the test failed before stopping it: SIGTERM lets it delete its files
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@pytest.mark.shared
def test_browser_end_to_end(browser_api: Any, demo_process: Tuple[str, subprocess.Popen, list], shared: Path,
                            tmp_path: Path) -> None:
    sync_playwright = browser_api
    url, proc, lines = demo_process
    photo = shared.joinpath(*BROWSER_PHOTO)
    input_luma = _luminance(_read_rgb(photo))
    text_file = tmp_path / "notes.txt"
    text_file.write_text("this is not a photo\n")
    shot = tmp_path / "demo.png"

    def done_with(page: Any, exposure: str, timeout: float = 120_000) -> None:
        page.wait_for_function(
            "e => document.getElementById('status').dataset.state === 'done' && "
            "document.getElementById('download').dataset.exposure === e", arg=exposure, timeout=timeout)

    def download(page: Any, name: str) -> np.ndarray:
        with page.expect_download() as info:
            page.click("#download")
        target = tmp_path / name
        info.value.save_as(target)
        return _read_rgb(target)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
            errors: list = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url)
            page.wait_for_selector("body[data-ready='1']")
            assert "LOL_smallNet" in page.inner_text("#model-line")
            assert page.locator("#examples button").count() >= 4

            # Upload a real low-light photo: it is enhanced at once (official output, EV 0).
            page.set_input_files("#file", str(photo))
            done_with(page, "0")
            official = download(page, "official.png")
            assert official.shape[:2] == _read_rgb(photo).shape[:2]
            official_luma = _luminance(official)
            assert official_luma > input_luma + 0.1

            # Move the exposure control (and ask for samples): a new job, progress, a brighter result.
            page.fill("#samples", "2")
            page.fill("#exposure", "1")
            assert page.inner_text("#exposure-value") == "+1 EV"
            page.wait_for_function("() => document.getElementById('status').dataset.state !== 'done'")
            done_with(page, "1")
            brighter = download(page, "plus1.png")
            assert brighter.shape == official.shape
            assert _luminance(brighter) > input_luma + 0.1
            assert _luminance(brighter) > official_luma + 0.02
            assert page.locator("#gallery button").count() == 3  # the result + 2 samples
            assert page.evaluate("document.getElementById('uncertainty').complete && "
                                 "document.getElementById('uncertainty').naturalWidth > 0")
            page.fill("#split", "30")
            split = page.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--pos')")
            assert split.strip() == "30%"  # the before/after divider follows the slider
            page.screenshot(path=str(shot), full_page=True)

            # A text file: a clear message on the page, the last result stays.
            page.set_input_files("#file", str(text_file))
            page.wait_for_selector("#error:not([hidden])")
            message = page.inner_text("#error")
            assert "notes.txt" in message and "not an image" in message, message
            # Dropped on the drop zone and over the 2 MB upload limit: refused with the limit in the message.
            dropped = page.evaluate_handle(
                "() => { const dt = new DataTransfer(); dt.items.add(new File([new Uint8Array(3 * 1024 * 1024)], "
                "'huge.jpg', {type: 'image/jpeg'})); return dt; }")
            page.dispatch_event("#drop", "drop", {"dataTransfer": dropped})
            page.wait_for_function("() => document.getElementById('error').textContent.includes('huge.jpg')")
            assert "upload limit" in page.inner_text("#error")
            assert page.get_attribute("#download", "data-exposure") == "1"
            # The server keeps serving: a bundled example still goes through.
            page.fill("#samples", "1")
            page.fill("#exposure", "0")
            page.click("#examples button[data-example='lol_1.png']")
            page.wait_for_function("() => document.getElementById('download').textContent.includes('400×267')",
                                   timeout=120_000)
            assert not errors, errors
        finally:
            browser.close()
    artefacts = os.environ.get("LLFLOW_TEST_ARTIFACTS")
    if artefacts:
        Path(artefacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artefacts) / "demo.png")
    print(f"screenshot: {shot}")

    # Ctrl-C / SIGTERM stops it cleanly and removes its temporary folder.
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, "".join(lines)
    temp = [line.split("temporary folder ", 1)[1].strip() for line in lines if "temporary folder" in line]
    assert temp and not Path(temp[0]).exists()
