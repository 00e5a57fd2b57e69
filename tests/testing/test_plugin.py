"""The pytest plugin as a user meets it: `pytest` run in a temporary directory on a small
user-style test file (the README example) that uses only the documented API."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
README_MARKER = "<!-- otelflow-testing-example -->"


def example_source() -> str:
    """The README's example: the python block after the marker."""
    text = (ROOT / "README.md").read_text()
    assert README_MARKER in text, "the README lost its plugin example"
    block = re.search(r"```python\n(.*?)```", text.split(README_MARKER, 1)[1], re.S)
    assert block, "no python block after the README's example marker"
    return block.group(1)


def run_pytest(directory: Path, *args: str) -> subprocess.CompletedProcess:
    # this checkout's package first (PYTHONPATH=src is relative to the repository root)
    paths = [str(ROOT / "src"), *(str(Path(p).resolve())
                                  for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, str(directory)],
        cwd=directory, env=env, capture_output=True, text=True, timeout=120)


def user_project(tmp_path: Path, source: str) -> Path:
    (tmp_path / "test_pipeline.py").write_text(source)
    shutil.copytree(ROOT / "tests" / "fixtures", tmp_path / "fixtures",
                    ignore=shutil.ignore_patterns("*.py"))
    return tmp_path


def test_readme_example_passes_in_a_fresh_directory(tmp_path):
    proc = run_pytest(user_project(tmp_path, example_source()))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 passed" in proc.stdout


def test_a_broken_expectation_fails(tmp_path):
    source = example_source().replace('"http.route": "/api/orders/{id}"', '"http.route": "/api/nowhere"')
    assert source != example_source()
    proc = run_pytest(user_project(tmp_path, source), "-k", "recorded_errors")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 failed, 2 deselected" in proc.stdout
