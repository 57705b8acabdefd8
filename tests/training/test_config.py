"""Training-recipe options of the campaign: extra (mild / identity) pairs, the auxiliary L1 term,
precision auto, CPU-time accounting and the full validation metric set. Self-contained: the pairs
are drawn here, no ../shared needed."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from llflow import runtime
from llflow.data import MixedPairs, PairedDataset, find_pairs, identity_pairs
from llflow.io import write_image
from llflow.training.config import config_from_dict
from llflow.training.losses import gray_ssim_per_sample
from llflow.training.trainer import Trainer, TrainingError, TrainingObjective, _seeded

from ..conftest import tiny_llflow

pytestmark = pytest.mark.usefixtures("one_thread")


def _pairs_folder(root: Path, count: int, brightness: float, seed: int, size: int = 48) -> Path:
    """``count`` smooth colour scenes as ``root/high`` and a darker, noisy copy as ``root/low``."""
    rng = np.random.default_rng(seed)
    (root / "low").mkdir(parents=True)
    (root / "high").mkdir()
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(count):
        phase = rng.uniform(0, 6, 3)
        high = 0.5 + 0.35 * np.sin(4 * xx[..., None] + 3 * yy[..., None] + phase)
        low = brightness * high ** 1.2 + rng.normal(0, 0.01, high.shape)
        write_image(root / "high" / f"s{i:02d}.png", np.clip(high * 255, 0, 255).round().astype(np.uint8))
        write_image(root / "low" / f"s{i:02d}.png", np.clip(low * 255, 0, 255).round().astype(np.uint8))
    return root


@pytest.fixture(scope="module")
def toy_pairs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("toy_pairs")
    return {"train": _pairs_folder(root / "train", 6, 0.1, 1), "mild": _pairs_folder(root / "mild", 4, 0.5, 2),
            "val": _pairs_folder(root / "val", 2, 0.1, 3)}


def _config(tmp_path: Path, toy: dict[str, Path], **sections) -> dict:
    raw = {
        "model": {"preset": "tiny"},
        "data": {"train": str(toy["train"]), "val": None, "crop": 32, "batch_size": 2, "num_workers": 0},
        "optim": {"objective": "nll", "iterations": 2, "lr": 1e-4, "precision": "fp32", "seed": 5},
        "schedule": {"log_every": 1, "val_every": 1000, "ckpt_every": 1000, "tensorboard": False},
        "output": str(tmp_path / "run"),
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return raw


def test_identity_pairs_use_each_reference_once(toy_pairs) -> None:
    pairs = find_pairs(toy_pairs["train"])
    doubled = pairs + pairs
    ident = identity_pairs(doubled)
    assert len(ident) == len(pairs)
    assert all(p.low == p.high and p.name.endswith("#identity") for p in ident)


def test_mixed_pairs_replace_the_given_share_reproducibly(toy_pairs) -> None:
    main = PairedDataset(toy_pairs["train"], crop=32, seed=1)
    extra = PairedDataset(identity_pairs(main.pairs), crop=32, seed=2)
    assert all(not MixedPairs(main, extra, 0.0)[(0, i)]["name"].endswith("#identity") for i in range(6))
    assert all(MixedPairs(main, extra, 1.0)[(0, i)]["name"].endswith("#identity") for i in range(6))
    mixed = MixedPairs(main, extra, 0.3, seed=9)
    names = [mixed[(e, i)]["name"] for e in range(40) for i in range(6)]
    share = np.mean([n.endswith("#identity") for n in names])
    assert 0.22 < share < 0.38, share
    again = MixedPairs(main, extra, 0.3, seed=9)
    for e, i in [(0, 0), (3, 5), (17, 2)]:
        a, b = mixed[(e, i)], again[(e, i)]
        assert a["name"] == b["name"] and torch.equal(a["low"], b["low"])
    identity_item = next(mixed[(e, i)] for e in range(40) for i in range(6) if mixed[(e, i)]["name"].endswith("#identity"))
    assert torch.equal(identity_item["low"], identity_item["gt"])  # input = reference
    with pytest.raises(ValueError, match=r"fraction must be in \[0, 1\]"):
        MixedPairs(main, extra, 1.5)


def test_trainer_mixes_mild_and_identity_pairs(tmp_path, toy_pairs) -> None:
    raw = _config(tmp_path, toy_pairs, data={"extra_train": str(toy_pairs["mild"]), "identity_pairs": True,
                                             "extra_fraction": 0.5})
    trainer = Trainer(config_from_dict(raw), device="cpu")
    assert isinstance(trainer.train_set, MixedPairs)
    assert len(trainer.train_set) == 6 and len(trainer.train_set.extra) == 4 + 6
    names = {trainer.train_set[(e, i)]["name"] for e in range(10) for i in range(6)}
    assert any(n.endswith("#identity") for n in names)
    assert names & {p.name for p in find_pairs(toy_pairs["mild"])}
    trainer.train()
    assert trainer.iteration == 2
    no_extra = _config(tmp_path, toy_pairs, data={"extra_fraction": 0.2})
    with pytest.raises(TrainingError, match="extra pairs are empty"):
        Trainer(config_from_dict(no_extra), device="cpu")


def test_auxiliary_terms_add_the_tau0_reconstruction_errors(toy_pairs) -> None:
    from llflow.preprocess import make_condition

    model = tiny_llflow(perturb=0.02, seed=4)
    item = PairedDataset(toy_pairs["train"], crop=32, seed=0)[0]
    low, gt, histeq = (item[k][None] for k in ("low", "gt", "histeq"))
    with torch.no_grad():
        plain = TrainingObjective(model, "nll", False)(low, gt, histeq, _seeded(1, 2))
        mixed = TrainingObjective(model, "nll", False, aux_l1=3.0)(low, gt, histeq, _seeded(1, 2))
        both = TrainingObjective(model, "nll", False, aux_l1=3.0, aux_ssim=0.5)(low, gt, histeq, _seeded(1, 2))
        lq = make_condition(low, histeq)
        nll = model.likelihood(lq, gt, prior="random", generator=_seeded(1, 2)).nll
        out, _ = model.reverse(lq)  # τ = 0
        expected_l1 = (out - gt).abs().mean()
        expected_ssim = gray_ssim_per_sample(out, gt)
    assert torch.allclose(plain, nll, rtol=1e-6, atol=1e-6)
    assert torch.allclose(mixed, nll + 3.0 * expected_l1, rtol=1e-5, atol=1e-5)
    assert torch.allclose(both, mixed + 0.5 * (1 - expected_ssim), rtol=1e-5, atol=1e-5)
    assert 0 < float(expected_ssim) < 1
    for name in ("aux_l1", "aux_ssim"):
        with pytest.raises(TrainingError, match=name):
            TrainingObjective(model, "l1", False, **{name: 1.0})
        with pytest.raises(TrainingError, match=name):
            TrainingObjective(model, "nll", False, **{name: -1.0})


def test_auxiliary_terms_train(tmp_path, toy_pairs) -> None:
    trainer = Trainer(config_from_dict(_config(tmp_path, toy_pairs, optim={"aux_l1": 1.0, "aux_ssim": 1.0})), device="cpu")
    trainer.train()
    assert trainer.iteration == 2 and trainer.nonfinite == 0


def test_precision_auto_follows_the_cpu(tmp_path, toy_pairs, monkeypatch, capsys) -> None:
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    trainer = Trainer(config_from_dict(_config(tmp_path, toy_pairs, optim={"precision": "auto"})), device="cpu")
    assert trainer.precision.name == "fp32"
    trainer.train()
    out = capsys.readouterr().out
    assert "runtime: cpu (" in out and "precision fp32" in out and "flags: avx2" in out
    assert "it/s over the first" in out
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx2", "amx_bf16"}))
    assert Trainer(config_from_dict(_config(tmp_path, toy_pairs, optim={"precision": "auto"})),
                   device="cpu").precision.name == "bf16"
    with pytest.raises(TrainingError, match="optim.precision: precision fp16 needs a GPU"):
        Trainer(config_from_dict(_config(tmp_path, toy_pairs, optim={"precision": "fp16"})), device="cpu")


def test_cpu_time_is_logged_and_survives_resume(tmp_path, toy_pairs) -> None:
    raw = _config(tmp_path, toy_pairs, schedule={"ckpt_every": 2, "log_every": 1})
    first = Trainer(config_from_dict(raw), device="cpu")
    first.train()
    spent = torch.load(tmp_path / "run" / "state.pt", weights_only=True)["cpu_seconds"]
    assert spent > 0
    raw["optim"]["iterations"] = 3
    resumed = Trainer(config_from_dict(raw), device="cpu", resume=tmp_path / "run")
    assert resumed.cpu_time() >= spent
    resumed.train()
    records = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    cpu_h = [r["cpu_h"] for r in records if r["kind"] == "train"]
    # logged to 4 decimals of an hour (0.36 s): compare rounded, as rounding keeps the order
    assert len(cpu_h) == 3 and cpu_h == sorted(cpu_h) and cpu_h[-1] >= round(spent / 3600, 4)


def test_validation_scores_like_llflow_evaluate(tmp_path, toy_pairs) -> None:
    from llflow.metrics import lpips_weights_available

    raw = _config(tmp_path, toy_pairs, data={"val": str(toy_pairs["val"])})
    metrics = Trainer(config_from_dict(raw), device="cpu").validation_metrics()
    expected = {"psnr", "ssim", "ssim_rgb", "psnr_gtmean", "ssim_gtmean", "ssim_rgb_gtmean", "nll"}
    if lpips_weights_available():
        expected |= {"lpips", "lpips_gtmean"}
    assert set(metrics) == expected
    assert all(np.isfinite(v) for v in metrics.values())


def test_cpu_budget_spent_by_a_scheduled_validation_stops_without_validating_twice(tmp_path, toy_pairs) -> None:
    raw = _config(tmp_path, toy_pairs, data={"val": str(toy_pairs["val"])},
                  optim={"iterations": 50}, schedule={"stop_after_cpu_h": 1.0, "val_every": 2, "val_at_start": False})
    trainer = Trainer(config_from_dict(raw), device="cpu")
    validate = trainer.validate

    def validate_and_spend_the_budget(*args, **kwargs):
        result = validate(*args, **kwargs)
        trainer.cfg.schedule.stop_after_cpu_h = 1e-9
        return result

    trainer.validate = validate_and_spend_the_budget
    trainer.train()
    assert trainer.iteration == 2
    records = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records if r["kind"] == "val"] == [2]
    assert torch.load(tmp_path / "run" / "state.pt", weights_only=True)["iteration"] == 2


def test_cpu_budget_stops_validates_and_resumes(tmp_path, toy_pairs, capsys) -> None:
    raw = _config(tmp_path, toy_pairs, data={"val": str(toy_pairs["val"])},
                  optim={"iterations": 50}, schedule={"stop_after_cpu_h": 1e-9, "val_at_start": False})
    trainer = Trainer(config_from_dict(raw), device="cpu")
    trainer.train()
    assert trainer.iteration == 1  # the first step spends the tiny budget
    assert "CPU budget of 1e-09 h spent at iteration 1" in capsys.readouterr().out
    records = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records if r["kind"] == "val"] == [1]
    assert torch.load(tmp_path / "run" / "state.pt", weights_only=True)["iteration"] == 1
    raw["schedule"]["stop_after_cpu_h"] = None
    raw["optim"]["iterations"] = 3
    resumed = Trainer(config_from_dict(raw), device="cpu", resume=tmp_path / "run")
    resumed.train()
    assert resumed.iteration == 3


def test_config_differences_name_each_changed_setting() -> None:
    from llflow.training.config import config_differences

    a = config_from_dict({"optim": {"aux_ssim": 3.0}, "output": "runs/a"})
    b = config_from_dict({"optim": {"aux_ssim": 0.0}, "data": {"crop": 96}, "output": "runs/b"})
    assert sorted(config_differences(a, b, ignore=("output",))) == [
        ("data.crop", 160, 96), ("optim.aux_ssim", 3.0, 0.0)]
    assert config_differences(a, a) == []


def test_resume_with_a_config_that_changes_the_recipe_is_refused(tmp_path, capsys) -> None:
    """The mistake this guards against: resuming a run started with ``--set optim.aux_ssim=3`` with the
    campaign YAML given again, which would quietly continue it without the term."""
    import yaml

    from llflow.cli import main

    run = tmp_path / "run"
    run.mkdir()
    started = config_from_dict({"optim": {"aux_ssim": 3.0}, "output": str(run)})
    (run / "config.yaml").write_text(yaml.safe_dump(started.to_dict(), sort_keys=False))
    given = tmp_path / "recipe.yaml"
    given.write_text(yaml.safe_dump({"optim": {"aux_ssim": 0.0}, "init": "elsewhere.safetensors"}))
    with pytest.raises(SystemExit, match=r"optim\.aux_ssim: 3\.0 in the run, 0\.0 in .*recipe\.yaml.*--set"):
        main(["train", str(given), "--resume", str(run)])
    # The same change made explicitly is what --set is for: the check passes (and `init`, which only
    # matters at a fresh start, is not a difference); training then stops on the missing data.
    capsys.readouterr()
    assert main(["train", str(given), "--resume", str(run), "--set", "optim.aux_ssim=0.0",
                 "--set", "data.train=" + str(tmp_path / "nowhere")]) != 0
    assert "differs" not in capsys.readouterr().err
