"""The README's examples (blocks marked ``<!-- example -->``) run as they
are, the pytest one through pytest; they, ``examples/`` and the notebook's
code pass ``mypy --strict``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import lamina
from support.plugin import plugin_args

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
EXAMPLES = REPO / "examples"

pytest_plugins = ["pytester"]


def _blocks(kind: str) -> list[str]:
    text = README.read_text()
    pattern = rf"<!-- example{kind} -->\n```python\n(.*?)```"
    return re.findall(pattern, text, flags=re.S)


def test_the_readme_has_examples() -> None:
    assert len(_blocks("")) >= 2 and len(_blocks(": pytest")) == 1


@pytest.mark.parametrize("n", range(len(_blocks(""))))
def test_readme_examples_run(n: int, tmp_path: Path) -> None:
    code = _blocks("")[n]
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr


def test_the_readme_pytest_example_passes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_readme=_blocks(": pytest")[0])
    args = [*plugin_args(), "-p", "no:cacheprovider", "--lamina-driver", "vfs"]
    r = pytester.runpytest_subprocess(*args)
    r.assert_outcomes(passed=1)


def _notebook_code() -> str:
    nb = json.loads((EXAMPLES / "explore.ipynb").read_text())
    cells = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    return "\n\n".join(cells) + "\n"


def test_mypy_strict_on_the_examples(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    files = []
    for i, code in enumerate(_blocks("") + _blocks(": pytest")):
        p = tmp_path / f"readme_{i}.py"
        p.write_text(code)
        files.append(p)
    nb = tmp_path / "explore_ipynb.py"
    nb.write_text(_notebook_code())
    files += [nb, *sorted(EXAMPLES.glob("*.py"))]
    # lamina from wherever this run imports it (the unprivileged run uses
    # a copy on PYTHONPATH, which mypy does not read).
    env = {**os.environ, "MYPYPATH": str(Path(lamina.__file__).parent.parent)}
    cmd = [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache")]
    r = subprocess.run(
        [*cmd, *map(str, files)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stdout + r.stderr
