"""The errors a user can meet, and how each ends ``python -m src.train``: one line on stderr.

=====================  ===========  =====================================================
error                  exit status  meaning
=====================  ===========  =====================================================
:class:`ConfigError`   2            a value (or a checkpoint) that cannot work, as argparse; a
                                   ``--trainer.max_time`` that ran out before the first epoch ended
:class:`DataError`     1            a data file that is missing, damaged or not the expected one
:class:`DivergenceError` 1          the training loss or the parameters became NaN or infinite
:class:`OutputError`   1            the run folder cannot be created or written (read-only, full disk)
SIGINT                 130          Ctrl-C (128 + 2); the run can be resumed
SIGTERM                143          stopped from outside (128 + 15, the shell's convention); resumable
=====================  ===========  =====================================================
"""

from __future__ import annotations

import re

__all__ = ["ConfigError", "DataError", "DivergenceError", "OutputError", "one_line"]


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the parameter, value and what is allowed."""


class DataError(RuntimeError):
    """A data file that is missing, truncated, corrupted or not the expected file; the message names it."""


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite."""


class OutputError(RuntimeError):
    """The run folder cannot be created or written (a read-only ``lightning_logs/``, a full disk)."""


_LITERAL = re.compile(r'Parser key "([^"]+)":\s*Expected a typing\.Literal\[(.*?)\]\.\s*Got value:\s*(.*)', re.S)
_RESTRICTED = re.compile(
    r'Parser key "([^"]+)":\s*Not of type \w+: (.+?) does not conform to restriction ([^\n]+)', re.S
)
_PARSER_KEY = re.compile(r'Parser key "([^"]+)":\s*(.*)', re.S)
_RULES = {"v>0": "> 0", "v>=0": ">= 0", "v<inf": "finite", "v<1": "< 1", "v>-inf": "finite", "v<=180": "<= 180"}


def _allowed(restriction: str) -> str:
    """jsonargparse's ``v>0 and v<inf`` as ``> 0 and finite``."""
    return " and ".join(_RULES.get(part.strip(), part.strip()) for part in restriction.split(" and "))


def one_line(err: BaseException) -> str:
    """A single line for an error: jsonargparse's multi-line parse errors are rewritten, others joined."""
    text = str(err).strip()
    m = _LITERAL.search(text)
    if m:
        key, allowed, value = m.groups()
        return f"--{key}={value.strip()!r} is not allowed; allowed: {allowed}"
    m = _RESTRICTED.search(text)
    if m:  # a restricted number type (jsonargparse.typing) refused the value (or a list's entry)
        key, value, restriction = m.groups()
        return f"--{key}: {value.strip()} is not allowed; it must be {_allowed(restriction)}"
    m = _PARSER_KEY.search(text)
    if m:
        key, rest = m.groups()
        # the first line of jsonargparse's explanation says it; the rest lists every type it tried
        first = next((line.strip() for line in rest.splitlines() if line.strip()), "invalid value")
        return f"--{key}: {first}"
    return " ".join(text.split())
