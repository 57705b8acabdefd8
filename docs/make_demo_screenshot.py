"""Regenerate docs/demo.png, the README's screenshot of ``llflow demo``.

    python docs/make_demo_screenshot.py [--example lol_1.png] [--output docs/demo.png]

Needs what the browser test needs (Playwright and Debian's /usr/bin/chromium) and Pillow, used only
to quantise the PNG to a palette so that the file stays small.
"""
from __future__ import annotations

import argparse
import io
import threading
from pathlib import Path

from llflow.demo.server import DemoApp, DemoServer
from llflow.inference import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--example", default="lol_1.png", help="bundled example to show")
    parser.add_argument("--exposure", default="0.5")
    parser.add_argument("--samples", default="4")
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parent / "demo.png")
    args = parser.parse_args()

    from PIL import Image
    from playwright.sync_api import sync_playwright

    app = DemoApp(load_model("default", "cpu"), model_label="default (llflow_default.safetensors, bundled)")
    server = DemoServer(app, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
            page = browser.new_page(viewport={"width": 1200, "height": 860})
            page.goto(server.url)
            page.wait_for_selector("body[data-ready='1']")
            page.fill("#samples", args.samples)
            page.fill("#exposure", args.exposure)
            page.click(f"#examples button[data-example='{args.example}']")
            page.wait_for_function(
                "e => document.getElementById('status').dataset.state === 'done' && "
                "document.getElementById('download').dataset.exposure === e", arg=args.exposure, timeout=300_000)
            page.fill("#split", "42")
            page.wait_for_timeout(300)
            png = page.screenshot(full_page=True)
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
        app.close()
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        args.output, optimize=True)
    print(f"{args.output}: {args.output.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
