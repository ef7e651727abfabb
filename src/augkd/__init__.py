"""augkd: aggressive automated augmentation made safe with top-K knowledge distillation."""

__version__ = "0.1.0"
