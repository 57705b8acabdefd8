"""``llflow export-onnx``."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..export import DEFAULT_OPSET, export_onnx
from ..model import LLFlow


def add_export_onnx(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("export-onnx", help="export the inference path (condition → image) to ONNX",
                       description="Export LLFlow's reverse path to ONNX (hist-eq, padding and the log "
                                   "transform stay outside the graph; H, W must be multiples of 8). "
                                   "Checks onnxruntime against torch unless --no-check.")
    p.add_argument("model", nargs="?", default="default",
                   help="checkpoint (.pth/.safetensors), 'default' (bundled), or preset:NAME for random weights")
    p.add_argument("-o", "--output", type=Path, default=Path("llflow.onnx"), help="output file (default llflow.onnx)")
    p.add_argument("--eps", action="store_true", help="add an eps input: decode z = μ + eps (pass τ·ε)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    p.add_argument("--no-check", dest="check", action="store_false", help="skip the onnxruntime comparison")
    p.add_argument("--rtol", type=float, default=1e-4, help="check tolerance relative to max|torch| (1e-4)")
    p.set_defaults(func=run_export_onnx)


def _load_for_export(spec: str) -> LLFlow:
    if spec.startswith("preset:"):
        torch.manual_seed(0)
        model = LLFlow.from_config(spec.split(":", 1)[1]).eval()
        model.mark_initialized()
        return model
    return LLFlow.from_pretrained(None if spec == "default" else spec)


def run_export_onnx(args: argparse.Namespace) -> int:
    model = _load_for_export(args.model)
    report = export_onnx(model, args.output, with_eps=args.eps, opset=args.opset, check=args.check, rtol=args.rtol)
    msg = f"wrote {report['path']} ({report['bytes'] / 1e6:.1f} MB, inputs: {', '.join(report['inputs'])}, opset {args.opset})"
    if args.check:
        msg += f"; onnxruntime vs torch: {report['check_rel_err']:.1e} relative"
    print(msg)
    return 0
