"""The README's Python example runs as written (documentation that cannot go stale silently)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert blocks, "README.md has no python example"
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    out = namespace["out"]
    model = namespace["model"]
    # one logged term per tapped layer, and the loss reached the network's parameters
    assert sorted(out.terms) == sorted(f"fd/{name}" for name in model.feature_layers)  # type: ignore[attr-defined]
    grads = [p.grad for p in model.parameters() if p.grad is not None]  # type: ignore[attr-defined]
    assert grads and all(g.isfinite().all() for g in grads)


def test_readme_states_the_ci_test_command() -> None:
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci
    assert "make test" in README.read_text(encoding="utf-8")
