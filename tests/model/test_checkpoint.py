"""Checkpoints: official .pth and our .safetensors, architecture detection, clear failures."""
from __future__ import annotations

import collections

import pytest
import torch
from safetensors.torch import save_file

from llflow import CheckpointError, LLFlow
from llflow.model import checkpoint as ckpt

from ..official import official_state


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    """The official tiny state dict from the repository (unused tensors zero-filled)."""
    return official_state("tiny", "repo")


def _outputs(model: LLFlow) -> torch.Tensor:
    low = torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(0)) * 0.3
    return model.enhance(low, clamp=False)


@pytest.mark.parametrize("source,name,preset", [
    pytest.param("repo", "tiny", "tiny", id="tiny"),
    pytest.param("shared", "lol_smallnet", "LOL_smallNet", marks=pytest.mark.shared, id="lol_smallnet")])
def test_official_pth_loads_with_detected_architecture(tmp_path, source: str, name: str, preset: str) -> None:
    state = official_state(name, source)
    path = tmp_path / "official.pth"
    torch.save(state, path)
    model = LLFlow.from_pretrained(path)
    reference = LLFlow.from_config(preset)
    reference.load_state_dict(state)
    assert model.config == reference.config
    torch.testing.assert_close(_outputs(model), _outputs(reference.eval()), rtol=0, atol=0)


def test_module_prefix_and_wrappers(tmp_path, tiny_state) -> None:
    prefixed = collections.OrderedDict(("module." + k, v) for k, v in tiny_state.items())
    torch.save(prefixed, tmp_path / "ddp.pth")
    torch.save({"state_dict": prefixed}, tmp_path / "wrapped.pth")
    a = LLFlow.from_pretrained(tmp_path / "ddp.pth")
    b = LLFlow.from_pretrained(tmp_path / "wrapped.pth")
    m = LLFlow.from_config("tiny")
    m.load_state_dict(prefixed)
    torch.testing.assert_close(_outputs(a), _outputs(b), rtol=0, atol=0)


def test_safetensors_roundtrip_keeps_config(tmp_path, tiny_state) -> None:
    model = LLFlow.from_config("tiny")
    model.load_state_dict(tiny_state)
    path = model.save_pretrained(tmp_path / "m.safetensors")
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind
    loaded = LLFlow.from_pretrained(path)
    assert loaded.config == model.config
    torch.testing.assert_close(_outputs(loaded), _outputs(model.eval()), rtol=0, atol=0)
    # safetensors written by someone else (no metadata): architecture is detected from the keys
    save_file({k: v.contiguous() for k, v in tiny_state.items()}, str(tmp_path / "bare.safetensors"))
    assert LLFlow.from_pretrained(tmp_path / "bare.safetensors").config == model.config


def _one_line_error(path, match: str) -> str:
    with pytest.raises(CheckpointError) as info:
        LLFlow.from_pretrained(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    assert match in message, message
    return message


def test_truncated_files_fail_clearly(tmp_path, tiny_state) -> None:
    full = tmp_path / "full.pth"
    torch.save(tiny_state, full)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    _one_line_error(cut, "cannot read as a PyTorch checkpoint")
    st = tmp_path / "full.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_state.items()}, str(st))
    cut_st = tmp_path / "cut.safetensors"
    cut_st.write_bytes(st.read_bytes()[:100_000])
    _one_line_error(cut_st, "cannot read as safetensors")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    _one_line_error(empty, "empty")
    _one_line_error(tmp_path / "missing.pth", "not found")


def test_foreign_checkpoints_fail_clearly(tmp_path, tiny_state) -> None:
    torch.save(torch.nn.Linear(3, 4).state_dict(), tmp_path / "linear.pth")
    _one_line_error(tmp_path / "linear.pth", "not an LLFlow checkpoint")
    torch.save({"epoch": 3, "note": "hello"}, tmp_path / "dict.pth")
    _one_line_error(tmp_path / "dict.pth", "not a state dict of tensors")
    text = tmp_path / "notes.pth"
    text.write_text("this is not a checkpoint")
    _one_line_error(text, "cannot read")


class Payload:
    """Stands for arbitrary code in a pickle: unpickling it would import and build this class."""

    def __reduce__(self):
        return (print, ("code ran while loading a checkpoint",))


def test_pickled_code_is_refused(tmp_path, capsys) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"weights": Payload()}, path)
    _one_line_error(path, "cannot read as a PyTorch checkpoint")
    assert "code ran" not in capsys.readouterr().out


def test_strict_loading_names_the_problem(tmp_path, tiny_state) -> None:
    model = LLFlow.from_config("tiny")
    partial = dict(tiny_state)
    partial.pop("RRDB.trunk_conv.bias")
    partial["RRDB.extra.weight"] = torch.zeros(1)
    partial["RRDB.conv_first.bias"] = torch.zeros(7)
    with pytest.raises(CheckpointError) as info:
        model.load_state_dict(partial)
    message = str(info.value)
    assert "1 missing key(s): RRDB.trunk_conv.bias" in message
    assert "1 unexpected key(s): RRDB.extra.weight" in message
    assert "RRDB.conv_first.bias (7,)≠(16,)" in message
    # architecture mismatch between file and requested preset
    with pytest.raises(CheckpointError, match="does not fit"):
        LLFlow.from_config("LOL_smallNet").load_state_dict(tiny_state)


def test_no_default_model_is_reported(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(ckpt, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(CheckpointError, match="no default model is installed"):
        LLFlow.from_pretrained()


def test_saved_weights_are_readable_by_others_as_the_umask_allows(tmp_path) -> None:
    """The atomic writer must not leave mkstemp's 0600 mode on a model file."""
    import os

    from ..conftest import tiny_llflow

    old = os.umask(0o022)
    try:
        path = tiny_llflow().save_pretrained(tmp_path / "w.safetensors")
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o644
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
