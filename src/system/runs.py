"""Where runs write, and writing files so that a reader (or a crash) never sees half of one.

* :data:`LOG_ROOT` — every run's folder is ``lightning_logs/<experiment>/version_N/``;
* :func:`claim_run_dir` — takes the next ``version_N`` atomically (``mkdir``), so two runs started
  together never share a folder;
* :func:`discard_unfinished` — removes the folders this process claimed that hold no checkpoint,
  when a run ends with an error (nothing in them could be resumed or reported);
* :func:`write_text_atomic` / :func:`write_json_atomic` — a temporary file beside the target,
  renamed over it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..errors import OutputError

__all__ = [
    "LOG_ROOT", "claim_run_dir", "discard_unfinished", "forget_claims", "unreported_run", "write_text_atomic",
    "write_json_atomic",
]  # fmt: skip

LOG_ROOT = Path("lightning_logs")

#: run folders created by this process, newest last
CLAIMED: list[Path] = []
#: their parent folders that the claims created (removed with them when left empty)
_CREATED_PARENTS: list[Path] = []
#: this command's checkpoint folder, known on every DDP process (rank 0's, broadcast by Lightning)
CHECKPOINT_DIR: list[Path] = []


def _next_version(parent: Path) -> int:
    versions = [int(p.name[8:]) for p in parent.glob("version_*") if p.name[8:].isdigit()]
    return max(versions, default=-1) + 1


def claim_run_dir(parent: str | Path) -> Path:
    """Create and return ``parent/version_N`` for the next free N; on a clash with another process take N+1."""
    parent = Path(parent)
    try:
        missing = [p for p in (parent, *parent.parents) if str(p) not in ("", ".") and not p.exists()]
        parent.mkdir(parents=True, exist_ok=True)
        _CREATED_PARENTS.extend(missing)  # innermost first
        version = _next_version(parent)
        while True:
            path = parent / f"version_{version}"
            try:
                path.mkdir()  # atomic: exactly one process creates it
            except FileExistsError:
                version += 1
                continue
            CLAIMED.append(path)
            return path
    except OSError as err:
        blocking = next((p for p in (parent, *parent.parents) if p.exists() and not p.is_dir()), None)
        if blocking is not None:  # mkdir says only "File exists"
            raise OutputError(
                f"cannot create the run folder in {parent}/: {blocking} is a file, not a folder; move it away, "
                "or name the run otherwise with --experiment"
            ) from err
        raise OutputError(
            f"cannot create the run folder in {parent}/ ({err.strerror or err}); make it writable, "
            "or run from a folder where lightning_logs/ can be written"
        ) from err


def unreported_run(ckpt_path: str | Path) -> Path | None:
    """The run folder ``lightning_logs/<experiment>/version_N`` of a checkpoint in its ``checkpoints/``, if it has no ``results.json``.

    Such a run was stopped after training and before its report was written (``results.json`` is
    the report's last file); ``None`` for a checkpoint outside a run folder here, or of a finished run.
    """
    ckpt = Path(ckpt_path)
    run = ckpt.parent.parent
    if ckpt.parent.name != "checkpoints" or not run.name.startswith("version_") or (run / "results.json").exists():
        return None
    return run if run.parent.parent.resolve() == LOG_ROOT.resolve() else None


def discard_unfinished() -> list[Path]:
    """Remove the run folders claimed by this process that hold no checkpoint; return them.

    The folders above them that the claims created go too, where nothing else is in them.
    """
    removed = []
    while CLAIMED:
        path = CLAIMED.pop()
        if path.is_dir() and not any(path.rglob("*.ckpt")):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    while _CREATED_PARENTS:
        try:
            _CREATED_PARENTS.pop(0).rmdir()  # only if empty
        except OSError:
            pass
    return removed


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``.

    A failed write (a full disk) leaves ``path`` as it was and raises :class:`OutputError` naming it.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err} (errno {err.errno})") from err
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json_atomic(path: str | Path, obj) -> Path:
    """``obj`` as indented JSON, written atomically (:func:`write_text_atomic`)."""
    return write_text_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


def forget_claims() -> None:
    """Start a new command: the folders claimed so far belong to finished ones."""
    CLAIMED.clear()
    _CREATED_PARENTS.clear()
    CHECKPOINT_DIR.clear()
