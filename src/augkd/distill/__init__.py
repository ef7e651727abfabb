"""Knowledge distillation over the teacher's top-K classes (the paper's section 3.3)."""

from augkd.distill.loss import KD_MODES, TeacherTopK, TopKKL, teacher_top_k, top_k_kl

__all__ = ["KD_MODES", "TeacherTopK", "TopKKL", "teacher_top_k", "top_k_kl"]
