"""augkd.distill.loss: the top-K KL of Eqn 3 and its invariants."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from augkd.distill.loss import KD_MODES, TopKKL, teacher_top_k, top_k_kl


def hinton_kd(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Reference: KL(p_T || p_S) at temperature T, times T^2, batch mean (torch's kl_div)."""
    log_s = F.log_softmax(student / temperature, dim=1)
    p_t = F.softmax(teacher / temperature, dim=1)
    return F.kl_div(log_s, p_t, reduction="batchmean") * temperature**2


def logits(seed: int, b: int = 16, c: int = 10, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(b, c, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 3


@pytest.mark.parametrize("mode", KD_MODES)
@pytest.mark.parametrize("temperature", [1.0, 2.0, 10.0])
def test_k_equal_c_is_hinton_kd(mode, temperature):
    s, t = logits(0), logits(1)
    got = top_k_kl(s, t, k=10, temperature=temperature, mode=mode)
    torch.testing.assert_close(got, hinton_kd(s, t, temperature), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", KD_MODES)
def test_zero_when_student_equals_teacher(mode):
    t = logits(2)
    assert top_k_kl(t.clone(), t, k=3, temperature=2.0, mode=mode).abs().item() < 1e-6


def test_renorm_is_a_divergence_and_partial_is_not():
    s, t = logits(3, b=256), logits(4, b=256)
    assert (top_k_kl(s, t, 3, 2.0, "renorm", reduction="none") >= -1e-6).all()
    # partial rewards moving mass into the teacher's top-K: a student that is surer of those classes goes below 0
    top = t.topk(3, dim=1).indices
    sure = torch.full_like(t, -20.0).scatter(1, top, t.gather(1, top))
    assert (top_k_kl(sure, t, 3, 2.0, "partial", reduction="none") < 0).any()


def test_only_the_teachers_top_k_classes_matter():
    s, t = logits(5), logits(6)
    top = t.topk(3, dim=1).indices
    outside = torch.ones_like(t, dtype=torch.bool).scatter(1, top, False)
    moved = s.clone()
    moved[outside] += torch.randn(int(outside.sum())) * 5  # change only classes outside C_K
    a = top_k_kl(s, t, 3, 2.0, "renorm", reduction="none")
    b = top_k_kl(moved, t, 3, 2.0, "renorm", reduction="none")
    torch.testing.assert_close(a, b)


def test_explicit_formula_of_both_modes():
    s, t, k, temp = logits(7, b=4), logits(8, b=4), 4, 3.0
    for i in range(4):
        c = t[i].topk(k).indices
        pt_full, ps_full = F.softmax(t[i] / temp, 0), F.softmax(s[i] / temp, 0)
        partial = (pt_full[c] * (pt_full[c].log() - ps_full[c].log())).sum() * temp**2
        qt, qs = F.softmax(t[i, c] / temp, 0), F.softmax(s[i, c] / temp, 0)
        renorm = (qt * (qt.log() - qs.log())).sum() * temp**2
        got_p = top_k_kl(s[i : i + 1], t[i : i + 1], k, temp, "partial")
        got_r = top_k_kl(s[i : i + 1], t[i : i + 1], k, temp, "renorm")
        torch.testing.assert_close(got_p, partial, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got_r, renorm, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", KD_MODES)
def test_gradcheck_float64(mode):
    s = logits(9, b=4, c=7, dtype=torch.float64).requires_grad_(True)
    t = logits(10, b=4, c=7, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: top_k_kl(x, t, 3, 2.0, mode), (s,))


def test_no_gradient_reaches_the_teacher():
    s = logits(11).requires_grad_(True)
    t = logits(12).requires_grad_(True)
    top_k_kl(s, t, 3, 2.0).backward()
    assert s.grad is not None and t.grad is None


def test_t2_scale_and_reductions():
    s, t = logits(13), logits(14)
    scaled = top_k_kl(s, t, 3, 4.0)
    plain = top_k_kl(s, t, 3, 4.0, t2_scale=False)
    torch.testing.assert_close(scaled, plain * 16)
    per = top_k_kl(s, t, 3, 4.0, reduction="none")
    assert per.shape == (16,)
    torch.testing.assert_close(per.mean(), scaled)
    torch.testing.assert_close(top_k_kl(s, t, 3, 4.0, reduction="sum"), per.sum())


def test_bad_arguments_are_clear_errors():
    s, t = logits(15), logits(16)
    with pytest.raises(ValueError, match=r"k must be in \[1, 10\]"):
        top_k_kl(s, t, k=11)
    with pytest.raises(ValueError, match="k must be in"):
        top_k_kl(s, t, k=0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        top_k_kl(s, t, k=3, temperature=0)
    with pytest.raises(ValueError, match="mode must be one of renorm, partial"):
        top_k_kl(s, t, k=3, mode="full")
    with pytest.raises(ValueError, match="must both be"):
        top_k_kl(s, t[:, :5], k=3)
    with pytest.raises(ValueError, match="k must be >= 1"):
        TopKKL(k=0)


def test_module_matches_function():
    s, t = logits(17), logits(18)
    loss = TopKKL(k=5, temperature=2.0, mode="partial")
    torch.testing.assert_close(loss(s, t), top_k_kl(s, t, 5, 2.0, "partial"))
    assert "k=5" in repr(loss)


def test_agreement_is_full_kl_at_k_equal_c_and_a_coarsened_kl_below():
    from augkd.distill.loss import agreement

    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(64, 10, generator=g) * 3, torch.randn(64, 10, generator=g) * 3
    full = agreement(student, teacher_top_k(teacher, 10, 1.0))
    p_t, log_p_s = teacher.softmax(1), student.log_softmax(1)
    assert torch.allclose(full["teacher_kl"], (p_t * (p_t.log() - log_p_s)).sum(1), atol=1e-5)
    assert torch.equal(full["agree_top1"], 100.0 * (student.argmax(1) == teacher.argmax(1)).float())
    in_top5 = (student.topk(5, 1).indices == teacher.argmax(1, keepdim=True)).any(1)
    assert torch.equal(full["agree_top5"], 100.0 * in_top5.float())
    top3 = agreement(student, teacher_top_k(teacher, 3, 1.0))
    idx = teacher.topk(3, 1).indices
    rest = torch.ones(64, 10, dtype=torch.bool).scatter(1, idx, False)
    coarse_t = torch.cat([p_t.gather(1, idx), (p_t * rest).sum(1, keepdim=True)], 1)
    coarse_s = torch.cat([log_p_s.exp().gather(1, idx), (log_p_s.exp() * rest).sum(1, keepdim=True)], 1)
    assert torch.allclose(top3["teacher_kl"], (coarse_t * (coarse_t / coarse_s).log()).sum(1), atol=1e-5)
    assert (top3["teacher_kl"] <= full["teacher_kl"] + 1e-6).all()  # coarsening never adds divergence
    same = agreement(teacher, teacher_top_k(teacher, 3, 1.0))
    assert (same["agree_top1"] == 100).all() and same["teacher_kl"].abs().max() < 1e-6
    with pytest.raises(ValueError, match="log-sum-exp at T = 1"):
        agreement(student, teacher_top_k(teacher, 3, 1.0)._replace(lse=None))
