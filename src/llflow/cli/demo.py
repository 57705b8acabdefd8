"""``llflow demo`` (the server itself is :mod:`llflow.demo.server`)."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any, Optional

from .options import add_model_options, add_tile_options, check_tile_args, load_enhancer

__all__ = ["add_demo", "run_demo"]


def add_demo(sub: argparse._SubParsersAction) -> None:
    """Register ``llflow demo``."""
    p = sub.add_parser(
        "demo", help="serve a local web page to try the model in a browser",
        description="Serve a web page (default http://127.0.0.1:7860/) to enhance photos interactively: "
                    "upload or drop an image, compare before/after, change exposure, temperature and "
                    "samples, download the full-resolution result. Runs on this machine only.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 exposes the demo "
                        "to your network)")
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860; 0 picks a free one)")
    add_model_options(p, engines=("fast", "reference"), memory=False)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the model (default: PyTorch's)")
    p.add_argument("--max-upload-mb", type=float, default=50.0,
                   help="largest accepted upload in MB (default: %(default)g)")
    p.add_argument("--max-megapixels", type=float, default=40.0,
                   help="largest accepted image in megapixels (default: %(default)g)")
    add_tile_options(p)
    p.add_argument("--memory-budget", default=None,
                   help="memory allowed per image for automatic tiling, e.g. 2GB (default: half the free memory)")
    p.add_argument("--seed", type=int, default=0, help="noise seed for τ > 0 (default: 0)")
    p.add_argument("--open", action="store_true", help="open the page in the default web browser")
    p.add_argument("-v", "--verbose", action="store_true", help="log every request")
    p.set_defaults(func=run_demo)


def _check_args(args: argparse.Namespace) -> None:
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be 0..65535, got {args.port}")
    if args.max_upload_mb <= 0:
        raise ValueError(f"--max-upload-mb must be > 0, got {args.max_upload_mb:g}")
    if args.max_megapixels <= 0:
        raise ValueError(f"--max-megapixels must be > 0, got {args.max_megapixels:g}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    check_tile_args(args)


def run_demo(args: argparse.Namespace) -> int:
    """``llflow demo``: load the model once, serve until Ctrl-C / SIGTERM, then delete the temporary folder."""
    import torch

    from ..demo.server import DemoApp, DemoConfig, DemoServer, _is_loopback

    _check_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    enhancer = load_enhancer(args)
    config = DemoConfig(max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), max_megapixels=args.max_megapixels,
                        tile=args.tile, tile_pad=args.tile_pad, seed=args.seed)
    from pathlib import Path

    default = args.model in (None, "default")
    label = f"default ({Path(enhancer.source).name}, bundled)" if default else str(args.model)
    app = DemoApp(enhancer, config, model_label=label)
    server: Optional[DemoServer] = None
    previous: Any = None
    try:
        try:
            server = DemoServer(app, args.host, args.port, verbose=args.verbose)
        except OSError as exc:
            hint = "; choose another with --port (0 picks a free one)" if exc.errno in (98, 48, 10048) else ""
            raise ValueError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}{hint}") from None
        if threading.current_thread() is threading.main_thread():
            def stop(signum: int, frame: Any) -> None:
                raise KeyboardInterrupt

            previous = signal.signal(signal.SIGTERM, stop)
        print(f"llflow demo: serving {server.url} (model {enhancer.architecture} on {enhancer.device}, "
              f"{enhancer.precision}, {args.engine} engine; Ctrl-C to stop)", flush=True)
        print(f"llflow demo: runtime {enhancer.describe_runtime()}", flush=True)
        print(f"llflow demo: temporary folder {app.root}", flush=True)
        if not _is_loopback(args.host):
            print(f"llflow demo: warning: listening on {args.host}: anyone who can reach this machine on port "
                  f"{server.server_address[1]} can use the demo", file=sys.stderr, flush=True)
        if args.open:
            import webbrowser

            webbrowser.open(server.url)
        try:
            server.serve_forever(poll_interval=0.25)
        except KeyboardInterrupt:
            pass
    finally:
        if server is not None:
            server.server_close()
        app.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    print("llflow demo: stopped; temporary files deleted", flush=True)
    return 0
