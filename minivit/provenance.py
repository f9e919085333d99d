"""Which code produced a result: the git commit of the minivit source that is running.

``minivit train`` writes it on every line of ``metrics.jsonl``, so the evidence committed
from a run (``benchmarks/run_summary.py``) names the code that trained it, not whatever was
checked out when it was summarised — and a run resumed on another commit says, epoch by
epoch, which code trained what.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["code_commit"]

_ROOT = Path(__file__).resolve().parents[1]       # the checkout that holds minivit/


def code_commit(root: Path | None = None) -> str | None:
    """The short commit of the git checkout minivit is imported from (or ``root``), e.g.
    ``"39e54f8"``, with ``"+dirty"`` appended when files under ``minivit/`` differ from it
    (the commit alone would then not reproduce the run). None when minivit is not imported
    from a git checkout (an installed wheel) or git is unavailable: an unknown commit is
    reported as unknown, never guessed."""
    root = Path(root) if root is not None else _ROOT
    if not (root / ".git").exists():            # a file in a worktree, a folder otherwise
        return None

    def git(*args) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip()
    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "minivit")
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "") if head else None
