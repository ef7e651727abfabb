"""The README's Python example runs as written (on real CIFAR-10 images)."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(cifar10_zip, read_jpegs):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README lost its Python example"
    with zipfile.ZipFile(cifar10_zip) as zf:
        names = sorted(n for n in zf.namelist() if n.startswith("test/") and n.endswith(".jpg"))[:16]
    images = torch.stack(read_jpegs(cifar10_zip, names))
    for code in blocks:
        scope = {"images": images, "indices": torch.arange(len(images)), "epoch": 0}
        exec(compile(code, "README.md", "exec"), scope)  # the README's own code; asserts inside must hold
