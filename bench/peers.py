"""Peers that Debian does not package, in a private venv of Debian's own interpreter.

aioraven comes from PyPI at a pinned version so that the comparison means the same thing on every
run. The venv is made from /usr/bin/python3 (without Debian's dist-packages), so the peer runs on
the very interpreter binary ravend runs on; it lives under .cache/ (ignored, removed by
`make deps-clean`) and is made again whenever it is missing or its pin changed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from bench.core import DEBIAN_PYTHON, ROOT

VENV = ROOT / ".cache" / "bench-venv"
#: The peers and their pins; changing this list remakes the venv.
REQUIREMENTS = ("aioraven==0.7.1",)
_STAMP = VENV / "ravend-bench-requirements.txt"


def peer_env() -> dict[str, str]:
    """No PYTHONPATH: the peer must not see ravend's tree or the caller's packages."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    return {k: v for k, v in os.environ.items() if k not in drop}


def peer_python(log: Callable[[str], None]) -> Path:
    """The venv's interpreter, after making the venv if it is missing or stale."""
    python = VENV / "bin" / "python"
    wanted = "\n".join(REQUIREMENTS) + "\n"
    if python.exists() and _STAMP.exists() and _STAMP.read_text() == wanted:
        return python
    log(f"making {VENV.relative_to(ROOT)} with {', '.join(REQUIREMENTS)}")
    shutil.rmtree(VENV, ignore_errors=True)
    VENV.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([DEBIAN_PYTHON, "-m", "venv", str(VENV)], check=True, env=peer_env())
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         *REQUIREMENTS],
        env=peer_env(), capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(REQUIREMENTS)} failed: "
                           f"{done.stderr.strip()[-500:]}")
    _STAMP.write_text(wanted)
    return python
