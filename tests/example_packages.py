"""Shared by the tutorial tests: the files of an example package under docs/examples/, the
code blocks of a page, and installing a package copy into a private target directory."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

IGNORED_PARTS = {"__pycache__", ".pytest_cache", "build", "dist"}


def package_files(root: Path) -> dict[str, str]:
    """Relative path -> text of every source file of the example package at ``root``."""
    files = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or IGNORED_PARTS & set(rel.parts) or any(p.endswith(".egg-info") for p in rel.parts):
            continue
        files[rel.as_posix()] = path.read_text(encoding="utf-8")
    return files


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```[\w-]*\n(.*?)^```", text, flags=re.M | re.S)


def install_copy(package: Path, root: Path) -> Path:
    """``pip install --target`` of a copy of ``package`` (no build files land in docs/);
    returns the target directory, to put on PYTHONPATH."""
    source, target = root / "src", root / "site"
    shutil.copytree(package, source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                           "--no-index", "--disable-pip-version-check", "--quiet", "--target", str(target),
                           str(source)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"installing {package.name} failed:\n{proc.stdout}\n{proc.stderr}"
    return target
