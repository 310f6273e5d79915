"""Ask a bash completion script what it offers, as bash does at a TAB: COMP_WORDS and
COMP_CWORD set, the completion function called, COMPREPLY read back."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: ravenctl's completion in the source tree (the package installs it by dh_bash-completion).
RAVENCTL_COMPLETION = ROOT / "tools" / "completion" / "ravenctl"


def offered(words: list[str], script: Path = RAVENCTL_COMPLETION,
            function: str = "_ravenctl") -> list[str]:
    """What the completion offers for the last of ``words`` (the word being typed, "" for a
    TAB after a space), in bash without any start-up file."""
    program = (f"source {shlex.quote(str(script))}\n"
               f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)})\n"
               f"COMP_CWORD={len(words) - 1}\n"
               f"{function}\n"
               'printf "%s\\n" "${COMPREPLY[@]}"\n')
    proc = subprocess.run(["bash", "--norc", "--noprofile", "-c", program], text=True,
                          capture_output=True, timeout=30, check=False)
    assert proc.returncode == 0 and not proc.stderr, (words, proc.returncode, proc.stderr)
    return [line for line in proc.stdout.splitlines() if line]
