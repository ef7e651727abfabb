"""augkd.augment.mix: replayable Beta draws, and Mixup/CutMix with timm's per-element semantics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from timm.data import mixup as timm_mixup

from augkd.augment.mix import Mixer, beta, mix_targets


def _ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic."""
    a, b = np.sort(a), np.sort(b)
    both = np.concatenate([a, b])
    return float(np.abs(np.searchsorted(a, both, "right") / len(a) - np.searchsorted(b, both, "right") / len(b)).max())


@pytest.mark.parametrize("alpha", [0.2, 0.8, 1.0, 2.0])
def test_beta_draws_follow_numpys_beta(alpha):
    n = 20000
    ours = beta(0, 3, torch.arange(n), alpha).numpy()
    ref = np.random.default_rng(0).beta(alpha, alpha, n)
    assert ((ours >= 0) & (ours <= 1)).all()  # small alphas put mass at the ends, as numpy does
    assert _ks_distance(ours, ref) < 1.73 * np.sqrt(2 / n)  # the 0.5% critical value of the KS test
    assert abs(ours.var() - 1 / (4 * (2 * alpha + 1))) < 0.01


def test_beta_draws_are_pure_functions_of_seed_epoch_and_id():
    ids = torch.tensor([5, 900, 17, 3])
    a = beta(1, 2, ids, 0.8)
    assert torch.equal(beta(1, 2, ids.flip(0), 0.8), a.flip(0))  # the batch around an id plays no part
    assert torch.equal(beta(1, 2, ids[1:2], 0.8), a[1:2])
    assert not torch.equal(beta(1, 3, ids, 0.8), a) and not torch.equal(beta(2, 2, ids, 0.8), a)


def test_draws_do_not_depend_on_the_batch_and_follow_the_probabilities():
    mixer = Mixer(mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.7, switch_prob=0.25, seed=4)
    ids = torch.arange(4000)
    p = mixer.sample(ids, 1, 32)
    part = mixer.sample(ids[100:150].flip(0), 1, 32)
    for key in p:
        assert torch.equal(part[key], p[key][100:150].flip(0)), key
    mixed = p["lam"] < 1
    assert abs(mixed.float().mean().item() - 0.7) < 0.03
    assert abs(p["cutmix"][mixed].float().mean().item() - 0.25) < 0.03
    box = p["box"]
    area = (box[:, 1] - box[:, 0]) * (box[:, 3] - box[:, 2])
    assert torch.allclose(p["lam"][p["cutmix"]].double(), 1 - area[p["cutmix"]].double() / 1024, atol=1e-7)
    assert (area[~p["cutmix"]] == 0).all()
    assert (Mixer(1.0, prob=0.0).sample(ids, 0, 32)["lam"] == 1).all()
    assert not Mixer(1.0).sample(ids, 0, 32)["cutmix"].any() and Mixer(0.0, 1.0).sample(ids, 0, 32)["cutmix"].any()


def test_cutmix_box_is_timms_rand_bbox():
    """Same centre, same lambda: the same box as timm's ``rand_bbox`` (centre drawn by numpy there)."""
    raw_lam = beta(0, 0, torch.arange(64), 1.0)
    for i in range(64):
        np.random.seed(i)
        cy, cx = np.random.randint(0, 32), np.random.randint(0, 24)
        np.random.seed(i)
        yl, yh, xl, xh = timm_mixup.rand_bbox((3, 32, 24), float(raw_lam[i]))
        ours = Mixer._box(torch.tensor([cy]), torch.tensor([cx]), raw_lam[i : i + 1], 32, 24)[0].tolist()
        assert ours == [int(yl), int(yh), int(xl), int(xh)], i


def test_mixing_and_targets_equal_timms_elem_mode(monkeypatch):
    """timm's ``Mixup(mode="elem")`` fed our draws mixes the images and labels as we do."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 3, 16, 16), generator=g, dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    mixer = Mixer(0.8, 1.0, prob=0.8, num_classes=10, label_smoothing=0.1, seed=2)
    ids = torch.arange(100, 108)
    p = mixer.sample(ids, 5, 16)
    assert p["cutmix"].any() and ((p["lam"] < 1) & ~p["cutmix"]).any() and (p["lam"] == 1).any()
    ref = timm_mixup.Mixup(0.8, 1.0, prob=0.8, mode="elem", label_smoothing=0.1, num_classes=10)
    monkeypatch.setattr(ref, "_params_per_elem", lambda n: (p["lam"].numpy().copy(), p["cutmix"].numpy()))
    rows = iter(i for i in range(8) if p["cutmix"][i])  # timm asks for a box per CutMix row, in order

    def bbox(shape, lam, ratio_minmax=None, correct_lam=True, count=None):
        i = next(rows)
        return tuple(p["box"][i].tolist()), float(p["lam"][i])

    monkeypatch.setattr(timm_mixup, "cutmix_bbox_and_lam", bbox)
    x_ref, t_ref = ref(images.float(), labels)
    x_ours, t_ours = mixer(images, labels, ids, 5)
    assert torch.equal(x_ours, x_ref.round().to(torch.uint8))
    assert torch.allclose(t_ours, t_ref, atol=1e-6)


def test_without_ids_the_draws_are_fresh_and_follow_torchs_seed():
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(16) % 4
    mixer = Mixer(1.0, 1.0, num_classes=4)
    torch.manual_seed(0)
    a, ta = mixer(images, labels)
    b, _ = mixer(images, labels)
    torch.manual_seed(0)
    c, tc = mixer(images, labels)
    assert not torch.equal(a, b) and torch.equal(a, c) and torch.equal(ta, tc)
    assert torch.allclose(ta.sum(1), torch.ones(16))


def test_targets_put_lam_on_the_label_and_the_rest_on_the_partner():
    t = mix_targets(torch.tensor([1, 2]), torch.tensor([3, 2]), torch.tensor([0.75, 0.4]), 4)
    assert t.tolist() == [[0.0, 0.75, 0.0, 0.25], [0.0, 0.0, 1.0, 0.0]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mixup_alpha": 0.0}, "one of them > 0"),
        ({"mixup_alpha": -1.0}, "must be >= 0"),
        ({"prob": 1.5}, r"prob and switch_prob must be in \[0, 1\]"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Mixer(**kwargs)
