"""Every private name of Lightning that this project touches, in one place.

Written and tested against ``lightning`` 2.6.6, the pinned version; :data:`TESTED` admits the later
2.6 patch releases (``2.6.6 <= version``, release below 2.7).  Outside that range a use takes the
public path where one exists, otherwise it warns once, naming what is no longer guaranteed, and
leaves Lightning's own behaviour: never a silently different count or file.  An upgrade of
Lightning breaks here, in one place.  What each use touches, why, and what it saves:

* ``ModelCheckpoint._should_skip_saving_checkpoint``, ``_should_save_on_train_epoch_end``,
  ``_last_checkpoint_saved``, ``_last_global_step_saved``, ``_save_last_checkpoint``,
  ``_monitor_candidates`` (:func:`last_checkpoint_due`, :func:`last_checkpoint_saved`,
  :func:`save_last_checkpoint`): ``last.ckpt`` follows every epoch's save point, so a stopped run
  resumes from its last finished epoch (a fix, not a saving).  Outside: a warning, and
  ``last.ckpt`` only where Lightning writes it.
* ``HyperparametersMixin._hparams_initial`` (:func:`initial_hparams`): ``hparams.yaml`` gets plain
  numbers (the CLI's ``PositiveInt`` made plain).  Outside: a warning, the values left as typed.
* ``DDPStrategy._start_method`` (:func:`ddp_start_method`): ``fit`` refuses ``ddp_spawn`` /
  ``ddp_fork`` before training, as their processes end before the after-fit report.  Outside: a
  warning, and the strategy taken for ``ddp``.

The training step uses none: Lightning's raw-step counter (``LightningOptimizer._on_before_step`` /
``_on_after_step``) and torch's ``Optimizer._opt_called`` went with the step inside ``backward``
(issue 25; BENCHMARKS.md).  Three more levers on the step, measured, each inside the noise
(BENCHMARKS.md, "Lightning's private names: what each saves"; ``bench/step_ab.py --ab NAME``
switches each to measure it again).  Medians of 16 fits, the
quartiles in brackets, against an A/A run of −0.6 % [−2.0, +1.4]:

* ``MLPClassifier.__setattr__`` storing Lightning's ``_current_fx_name`` (set 22 times a step)
  without ``nn.Module.__setattr__``'s checks: +0.8 % [−0.5, +1.6]; dropped (a private name);
* ``ResumableModelCheckpoint.state_key`` cached (read 3 times a step): +1.2 % [−3.6, +4.7];
* ``training_step.__signature__`` cached (read once a step): +1.4 % [−1.8, +4.7].

The last two name nothing private and together won 19 of 24 fits (+1.7 % [+0.1, +3.0]): they
stay, in ``callbacks.py`` and ``module.py``, not here.
"""

from __future__ import annotations

import warnings

import lightning
import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy, Strategy
from packaging.version import Version

__all__ = [
    "TESTED", "in_tested_range", "last_checkpoint_due", "last_checkpoint_saved",
    "save_last_checkpoint", "initial_hparams", "ddp_start_method",
]  # fmt: skip

#: the Lightning versions these uses were written and tested against: from ``TESTED[0]``, releases below ``TESTED[1]``
TESTED = (Version("2.6.6"), Version("2.7"))

_range_of: dict[str, bool] = {}  # lightning.__version__ → inside TESTED (read on every step)
_warned: set[str] = set()


def in_tested_range() -> bool:
    """Whether the running Lightning (``lightning.__version__``, read each call) is inside :data:`TESTED`."""
    version = lightning.__version__
    inside = _range_of.get(version)
    if inside is None:  # by release number: 2.7.0rc1 is outside, 2.6.7.post1 inside
        v = Version(version)
        inside = _range_of[version] = TESTED[0] <= v and v.release < TESTED[1].release
    return inside


def _outside(what: str) -> bool:
    """True outside the range, after one warning per process saying what then happens instead."""
    if in_tested_range():
        return False
    if what not in _warned:
        _warned.add(what)
        warnings.warn(
            f"lightning {lightning.__version__} is outside the range this project's use of its private names was "
            f"tested with ({TESTED[0]} <= version < {TESTED[1]}, src/system/lightning_private.py): {what}",
            UserWarning,
            stacklevel=3,
        )
    return True


# ----------------------------------------------------- last.ckpt after every save
def last_checkpoint_due(ckpt: ModelCheckpoint, trainer: "pl.Trainer", on_train_epoch_end: bool) -> bool:
    """Whether ``ckpt`` saves at this hook (``on_train_epoch_end`` or ``on_validation_end``): Lightning's own test.

    :class:`~src.system.callbacks.ResumableModelCheckpoint` then writes ``last.ckpt`` too, where
    Lightning 2.6 writes it only with a new best, so that a stopped run resumes from its last
    finished epoch.  Outside :data:`TESTED`: ``False`` after one warning, Lightning's behaviour.
    """
    if _outside("last.ckpt is written only when Lightning writes it (with a new best checkpoint), so a stopped run "
                "may resume from an earlier epoch than its last"):  # fmt: skip
        return False
    return (
        not ckpt._should_skip_saving_checkpoint(trainer)
        and ckpt._should_save_on_train_epoch_end(trainer) == on_train_epoch_end
    )


def last_checkpoint_saved(ckpt: ModelCheckpoint, trainer: "pl.Trainer") -> bool:
    """Whether Lightning itself has just written ``last.ckpt`` at this global step."""
    return ckpt._last_checkpoint_saved == ckpt.last_model_path and ckpt._last_global_step_saved == trainer.global_step


def save_last_checkpoint(ckpt: ModelCheckpoint, trainer: "pl.Trainer") -> None:
    """Write ``last.ckpt`` now, as Lightning's ``save_last`` does (same name, same metrics)."""
    ckpt._save_last_checkpoint(trainer, ckpt._monitor_candidates(trainer))


# ------------------------------------------------------------------- the CLI's
def initial_hparams(obj: "pl.LightningModule | pl.LightningDataModule") -> dict:
    """The hyperparameters as first saved, the dict Lightning writes to ``hparams.yaml`` (the public
    ``hparams_initial`` is a copy).  Outside :data:`TESTED`: an empty dict, after one warning."""
    if _outside("hparams.yaml keeps the values as the command line typed them (e.g. PositiveInt)"):
        return {}
    return obj._hparams_initial if hasattr(obj, "_hparams_initial") else {}


def ddp_start_method(strategy: Strategy) -> str:
    """How the strategy starts its processes: ``popen`` (``ddp``, one process), ``spawn``, ``fork``, ``forkserver``.

    Public only as ``DDPStrategy(start_method=...)``.  Outside :data:`TESTED` a DDP strategy is
    taken for ``popen`` after one warning (``fit`` then may end without its results).
    """
    if not isinstance(strategy, DDPStrategy):
        return "popen"
    if _outside("fit cannot tell ddp_spawn / ddp_fork from ddp, whose processes end before the after-fit report"):
        return "popen"
    return strategy._start_method
