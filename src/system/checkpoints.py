"""Checkpoints: written crash-safely, loaded without running code, and checked against the run.

* :class:`AtomicCheckpointIO` — writes each ``.ckpt`` to a temporary file in the same folder,
  fsyncs and renames it, and loads with ``weights_only=True``;
* :func:`check_state_shapes` — a checkpoint's tensors against the model they are loaded into;
* :func:`checkpoint_conflicts` — the values a user gave explicitly (flags, ``--config`` files)
  that differ from those a checkpoint was trained with: with ``--ckpt_path`` the checkpoint's
  win, so a difference is refused instead of silently overridden;
* :func:`explicit_model_keys` — which ``--model.*`` / ``--data.*`` keys a command line sets.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

import torch
import yaml
from lightning.fabric.plugins import TorchCheckpointIO

from .config import config_files
from ..errors import ConfigError, OutputError

__all__ = [
    "AtomicCheckpointIO", "batch_size_change", "check_state_shapes", "checkpoint_conflicts", "checkpoint_seed",
    "explicit_keys", "completed_epochs", "check_lightning_checkpoint", "folder_given",
]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Save each checkpoint crash-safely and load it without running code.

    Saving: ``torch.save`` into ``.<name>.<pid>.tmp`` beside the target, ``fsync``, then
    ``os.replace`` (atomic on POSIX and Windows) and an ``fsync`` of the folder — a kill at any
    moment leaves the old ``.ckpt`` or the new one, never a truncated file.  (Lightning's own
    writer stages the file in the system temp folder and *moves* it, which is a copy, not a
    rename, whenever that folder is on another file system.)  A stale ``.tmp`` left by a kill
    is never read.  A write that fails (a full disk: ``OSError`` ENOSPC, which ``torch.save``
    reports as a ``RuntimeError`` chained to it) removes the temporary file and raises one
    :class:`~src.errors.OutputError` naming the file; the checkpoint it was to replace is untouched.

    Loading: ``torch.load(weights_only=True)`` unless the caller asks otherwise, so a checkpoint
    can hold tensors and plain Python values only; this project's checkpoints need nothing else.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if "://" in str(path):  # remote file systems: Lightning's own transactional writer
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"storage_options are not supported by {type(self).__name__}")
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
                fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except (OSError, RuntimeError) as err:
            cause = _os_error(err)
            if cause is None:  # not the file system's (torch's own RuntimeError): as it is
                raise
            raise OutputError(
                f"cannot write the checkpoint {path}: {cause.strerror or cause} (errno {cause.errno}); "
                "the checkpoints written before are intact and no partial file is left"
            ) from err
        finally:
            tmp.unlink(missing_ok=True)

    def load_checkpoint(
        self,
        path,
        map_location: Optional[Callable] = lambda storage, loc: storage,
        weights_only: Optional[bool] = None,
    ) -> dict[str, Any]:
        try:
            return super().load_checkpoint(path, map_location, weights_only=True if weights_only is None else weights_only)
        except FileNotFoundError as err:
            raise ConfigError(f"--ckpt_path={str(path)!r}: no such checkpoint file") from err
        except IsADirectoryError as err:
            raise ConfigError(folder_given(path)) from err
        except pickle.UnpicklingError as err:
            if not _what_file(path).startswith("it is a damaged PyTorch"):  # not torch.save's archive at all
                raise ConfigError(f"checkpoint {path} cannot be loaded: {_what_file(path)}") from err
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(
                f"checkpoint {path} cannot be loaded safely (weights_only=True refuses it: {first}); "
                "it is not a checkpoint of this project or it is damaged"
            ) from err
        except Exception as err:  # a truncated archive, a file that is no checkpoint at all, …
            raise ConfigError(
                f"checkpoint {path} cannot be loaded: {_what_file(path)} ({type(err).__name__}: {err})"
            ) from err


def _what_file(path) -> str:
    """What a file that ``torch.load`` cannot read is, by its first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as err:
        return f"it cannot be read ({err.strerror or err})"
    if head.startswith(b"PK\x03\x04"):  # torch.save's zip archive
        return "it is a damaged PyTorch checkpoint (its zip archive cannot be read: truncated or overwritten)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "it is a binary file in another format, not a PyTorch checkpoint"
    first = text.strip().splitlines()[0][:40] if text.strip() else ""
    return f"it is a text file (it starts with {first!r}), not a PyTorch checkpoint"


def folder_given(path) -> str:
    """The line for a folder given as ``--ckpt_path``, naming a checkpoint inside it where there is one."""
    found = sorted(Path(path).rglob("last.ckpt")) or sorted(Path(path).rglob("*.ckpt"))
    hint = f", e.g. --ckpt_path {found[-1]}" if found else " (this one holds none)"
    return f"--ckpt_path={str(path)!r} is a folder, not a checkpoint file; give a .ckpt file{hint}"


#: what every checkpoint Lightning writes holds
LIGHTNING_KEYS = ("state_dict", "pytorch-lightning_version")


def check_lightning_checkpoint(ckpt: Any, path) -> None:
    """Raise :class:`ConfigError` for a file ``torch.save`` wrote that is not a Lightning checkpoint (what it holds)."""
    ask = "give a .ckpt that python -m src.train fit wrote, e.g. lightning_logs/<experiment>/version_N/checkpoints/last.ckpt"
    if not isinstance(ckpt, Mapping):
        what = f"a tensor of shape {tuple(ckpt.shape)}" if isinstance(ckpt, torch.Tensor) else f"a {type(ckpt).__name__}"
        raise ConfigError(f"checkpoint {path} holds {what} that torch.save wrote, not a Lightning checkpoint; {ask}")
    missing = [k for k in LIGHTNING_KEYS if k not in ckpt]
    if missing:
        keys = ", ".join(repr(k) for k in list(ckpt)[:5]) + (", …" if len(ckpt) > 5 else "")
        raise ConfigError(
            f"checkpoint {path} is not a Lightning checkpoint: it is a dict with the keys {keys or 'none'} and lacks "
            f"{', '.join(repr(k) for k in missing)}; {ask}"
        )


def _os_error(err: BaseException | None) -> OSError | None:
    """The ``OSError`` in an exception's chain (``torch.save`` raises a ``RuntimeError`` from the failed write)."""
    while err is not None and not isinstance(err, OSError):
        err = err.__cause__ or err.__context__
    return err


def check_state_shapes(model_state: Mapping[str, Any], ckpt_state: Mapping[str, Any], source: str = "checkpoint") -> None:
    """Raise :class:`ConfigError` if a checkpoint's tensors do not fit the model (names or shapes).

    Both mappings are ``name → tensor``; only parameter/buffer names of the model are compared.
    """
    mismatched = [
        (k, tuple(ckpt_state[k].shape), tuple(v.shape))
        for k, v in model_state.items()
        if k in ckpt_state and hasattr(ckpt_state[k], "shape") and tuple(ckpt_state[k].shape) != tuple(v.shape)
    ]
    if mismatched:
        k, saved, here = mismatched[0]
        raise ConfigError(
            f"{source} was saved from a different architecture: {k} has shape {saved} in the checkpoint "
            f"but {here} in this model ({len(mismatched)} tensor(s) differ); use the checkpoint's "
            "--model.hidden_layers / inputs / outputs"
        )
    missing = [k for k in model_state if k not in ckpt_state]
    extra = [k for k in ckpt_state if k not in model_state]
    if missing or extra:
        raise ConfigError(
            f"{source} was saved from a different architecture: it has "
            f"{', '.join(extra) or 'no extra tensors'} that this model lacks, and lacks "
            f"{', '.join(missing) or 'nothing'}; checkpoint shapes "
            f"{ {k: tuple(ckpt_state[k].shape) for k in extra} }, model shapes "
            f"{ {k: tuple(model_state[k].shape) for k in missing} }; use the checkpoint's --model.hidden_layers"
        )


def explicit_keys(args: Iterable[str]) -> dict[str, set[str]]:
    """``{"model": {...}, "data": {...}, "run": {...}}``: the keys that flags or ``--config`` files of ``args`` set.

    ``run`` holds the top-level keys compared with a checkpoint's (``seed_everything``).
    """
    args = list(args)
    found: dict[str, set[str]] = {"model": set(), "data": set(), "run": set()}
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag == "--seed_everything":
            found["run"].add("seed_everything")
        for group in ("model", "data"):
            if flag.startswith(f"--{group}."):
                found[group].add(flag[len(group) + 3 :].split(".")[0])
    for path in config_files(args):
        try:
            content = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue  # the parser has already refused it in one line
        if not isinstance(content, dict):
            continue
        for section in (content, *(v for k, v in content.items() if k in ("fit", "validate", "test", "predict"))):
            if isinstance(section, dict):
                if "seed_everything" in section:
                    found["run"].add("seed_everything")
                for group in ("model", "data"):
                    if isinstance(section.get(group), dict):
                        found[group] |= set(section[group])
    return found


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def completed_epochs(ckpt: Mapping[str, Any]) -> int:
    """Training epochs a checkpoint has finished (its ``epoch`` is the last finished one, from 0)."""
    return int(ckpt.get("epoch", -1)) + 1


def checkpoint_seed(ckpt: Mapping[str, Any]) -> Optional[int]:
    """The ``--seed_everything`` a checkpoint's run was trained with; ``None`` where the checkpoint cannot say.

    Saved by :class:`~src.system.callbacks.RNGStateCallback`; in checkpoints written before it was,
    the data module's split seed, where that was the run's (``--data.seed`` not given).
    """
    for key, state in (ckpt.get("callbacks") or {}).items():
        if str(key).startswith("RNGStateCallback") and isinstance(state, Mapping) and state.get("seed_everything") is not None:
            return int(state["seed_everything"])
    if (ckpt.get("datamodule_hyper_parameters") or {}).get("seed") is None:
        seed = (ckpt.get("MNISTDataModule") or {}).get("seed")
        return None if seed is None else int(seed)
    return None


def checkpoint_conflicts(
    model: Any, data: Any, ckpt: Mapping[str, Any], explicit: dict[str, set[str]], seed: Any = None
) -> list[str]:
    """``--group.key=value (checkpoint: value)`` for each explicit value that differs from the checkpoint's.

    ``model`` / ``data`` are the parsed groups (before the checkpoint's values replace them); the
    checkpoint's model values are its ``hyper_parameters``, its split the data module's state;
    ``seed`` is the parsed ``--seed_everything``, compared with :func:`checkpoint_seed` when explicit
    (a resumed run draws from the checkpoint's random states: another seed would change nothing).
    """
    saved = {"model": dict(ckpt.get("hyper_parameters") or {}), "data": {}}
    state = ckpt.get("MNISTDataModule") or {}
    saved["data"].update({k: state[k] for k in ("seed", "val_size") if state.get(k) is not None})
    given = {"model": model, "data": data}
    out = []
    for group in ("model", "data"):
        for key in sorted(explicit.get(group, ())):
            if key not in saved[group] or given[group] is None:
                continue
            value = given[group].get(key) if hasattr(given[group], "get") else None
            if value is None and group == "data":
                continue  # data.seed None: "the run's seed", nothing explicit to compare
            if not _same(value, saved[group][key]):
                out.append(f"--{group}.{key}={value!r} (checkpoint: {saved[group][key]!r})")
    saved_seed = checkpoint_seed(ckpt)
    if "seed_everything" in explicit.get("run", ()) and saved_seed is not None and seed != saved_seed:
        out.append(f"--seed_everything={seed!r} (checkpoint: {saved_seed})")
    return out


def batch_size_change(data: Any, ckpt: Mapping[str, Any]) -> Optional[str]:
    """A warning when the resumed run's ``--data.batch_size`` is not the checkpoint's, else ``None``.

    Accepted (a resumed run may go on with other steps), but from there it is another run than
    the uninterrupted one: other steps, another data order.
    """
    saved = (ckpt.get("datamodule_hyper_parameters") or {}).get("batch_size")
    given = data.get("batch_size") if hasattr(data, "get") else None
    if saved is None or given is None or given == saved:
        return None
    return (
        f"--data.batch_size={given} is not the checkpoint's ({saved}): the resumed run takes steps of {given} from "
        f"here on, so it will not equal the uninterrupted run; give --data.batch_size {saved} to continue it exactly"
    )
