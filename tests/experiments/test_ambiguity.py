"""augkd.experiments.ambiguity: a trained teacher's view of each op and level, on real images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from augkd.bench.augment import sample_images
from augkd.cli import main
from augkd.experiments.ambiguity import measure_ambiguity, score


@pytest.fixture(scope="module")
def images(cifar10_zip) -> torch.Tensor:
    return sample_images(cifar10_zip, 24)


def _logits_fn(images: torch.Tensor) -> torch.Tensor:
    """A fixed 'teacher': logits from the mean colour of the image (deterministic, batch-independent)."""
    torch.manual_seed(0)
    weight = torch.randn(10, 3)
    return images.float().mean(dim=(2, 3)) @ weight.T / 64.0


def test_score_matches_softmax_definitions() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    s = score(logits, torch.tensor([0, 2]))
    p = torch.softmax(logits, 1)
    assert torch.allclose(s["p_true"], torch.stack([p[0, 0], p[1, 2]]))
    assert s["entropy"][1].item() == pytest.approx(1.0)  # uniform: entropy / log C = 1
    assert s["agree"].tolist() == [True, False]


def test_level_zero_is_clean_and_level_ten_is_blank(images: torch.Tensor) -> None:
    labels = torch.arange(len(images)) % 10
    res = measure_ambiguity(_logits_fn, images, labels, "geo-n2-m4", levels=[0, 5, 10])
    ops = {r["op"] for r in res["ops"]}
    assert ops == {"shear_x", "shear_y", "translate_x", "translate_y", "cutout"}
    for row in res["ops"]:
        if row["level"] == 0:  # every op is the identity at level 0
            assert row["p_true"] == pytest.approx(res["clean"]["p_true"], abs=1e-6)
    # At level 10 the geometric space hides the whole image: every op shows the same grey image.
    blank = [r for r in res["ops"] + res["policy"] if r["level"] == 10]
    assert len(blank) == 6 and max(r["p_true"] for r in blank) - min(r["p_true"] for r in blank) < 1e-6
    assert [r["op"] for r in res["policy"]] == ["policy geo-n2-m0", "policy geo-n2-m5", "policy geo-n2-m10"]


def test_teacher_confidence_falls_with_level(images: torch.Tensor, tiny_teacher: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "amb"
    args = ["ambiguity", "--teacher", str(tiny_teacher), "--policy", "geo-n2-m6", "--images", "40"]
    args += ["--levels", "0", "3", "6", "10", "--gallery", "6", "--out", str(out), "--json"]
    assert main(args) == 0
    res = json.loads(capsys.readouterr().out)
    clean, policy = res["clean"], res["policy"]
    assert clean["n"] == 40
    assert [r["level"] for r in policy] == [0, 3, 6, 10]
    assert policy[0]["p_true"] == pytest.approx(clean["p_true"], abs=1e-6)  # geo-n2-m0 leaves images as they are
    # At level 10 every image is the same grey square: one prediction for all, right for one class at most.
    assert policy[-1]["agree"] <= 100.0 * 8 / 40
    for name in ("ambiguity.md", "ambiguity.csv", "ambiguity.json", "ambiguity.png", "most_ambiguous.png"):
        assert (out / name).is_file(), name
    with Image.open(out / "ambiguity.png") as png:
        assert png.format == "PNG"
    md = (out / "ambiguity.md").read_text()
    assert "| translate_x |" in md and "policy (whole)" in md
    assert len((out / "ambiguity.csv").read_text().splitlines()) == 1 + 1 + 5 * 4 + 4


def test_bad_arguments_are_one_line_errors(tiny_teacher: Path, tmp_path: Path, capsys) -> None:
    base = ["ambiguity", "--teacher", str(tiny_teacher), "--out", str(tmp_path)]
    assert main([*base, "--policy", "geo-n2"]) == 2
    assert "bad augmentation policy spec" in capsys.readouterr().err
    assert main([*base, "--images", "0"]) == 2
    assert "--images must be >= 1" in capsys.readouterr().err
    assert main(["ambiguity", "--teacher", str(tmp_path / "none.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    (tmp_path / "teacher.yaml").write_text("epochs: 1\n")
    assert main(["ambiguity", "--teacher", str(tmp_path / "teacher.yaml")]) == 2
    assert capsys.readouterr().err.endswith(
        "teacher.yaml: not a checkpoint (expected best.pt or last.pt of an augkd run)\n"
    )
    # a run folder means its best.pt: the bad policy is reached only after the teacher was loaded
    assert main(["ambiguity", "--teacher", str(tiny_teacher.parent), "--out", str(tmp_path), "--policy", "geo-n2"]) == 2
    assert "bad augmentation policy spec" in capsys.readouterr().err


def test_progress_bar_counts_every_scored_image(images: torch.Tensor, capsys, monkeypatch) -> None:
    import tqdm as tqdm_module

    closed: dict[str, object] = {}

    class Recording(tqdm_module.tqdm):  # what the bar counted, whatever tqdm chose to redraw
        def close(self) -> None:
            if not self.disable:
                closed.update(desc=self.desc, total=self.total, n=self.n)
            super().close()

    monkeypatch.setattr(tqdm_module, "tqdm", Recording)
    labels = torch.arange(len(images)) % 10
    measure_ambiguity(_logits_fn, images, labels, "geo-n2-m4", levels=[0, 5], progress=True)
    # clean + 5 ops x 2 levels + the policy at 2 levels: 13 passes over the images
    assert closed == {"desc": "ambiguity", "total": 13 * len(images), "n": 13 * len(images)}
    assert "ambiguity" in capsys.readouterr().err
    measure_ambiguity(_logits_fn, images, labels, "geo-n2-m4", levels=[0, 5])
    assert capsys.readouterr().err == ""


def test_a_policy_with_its_own_magnitudes_is_reported_apart_from_the_levels(images: torch.Tensor, tmp_path) -> None:
    from augkd.experiments.ambiguity import ambiguity_report

    labels = torch.arange(len(images)) % 10
    res = ambiguity_report(
        _logits_fn, images, labels, [str(c) for c in range(10)], "aa-cifar10", tmp_path, levels=[0, 5], gallery=0
    )
    assert res["policy_levels"] is False and len(res["policy"]) == 1
    md = (tmp_path / "ambiguity.md").read_text()
    # The AutoAugment policy as it is (its own magnitudes) is not a cell of the L=0 column
    assert "policy (whole)" not in md
    agree = res["policy"][0]["agree"]
    assert f"The whole policy at its own magnitudes: {agree:.1f}." in md
    geo = ambiguity_report(
        _logits_fn, images, labels, [str(c) for c in range(10)], "geo-n2-m4", tmp_path / "geo", levels=[0, 5], gallery=0
    )
    assert geo["policy_levels"] is True
    assert "| policy (whole) |" in (tmp_path / "geo" / "ambiguity.md").read_text()
