"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class RobustkitError(Exception):
    """A user-facing error: the message names the problem and the fix, on one line."""


class StudyInterrupted(RobustkitError):
    """A study stopped by Ctrl-C: completed cells are kept and ``--resume`` continues the run."""

    exit_code = 130


class GateFailed(RobustkitError):
    """A trained model failed its convergence gate: training stops and the CLI exits with code 3.
    ``check`` names the first failed check (``converged``, ``lipschitz``, ``ball_starts``)."""

    exit_code = 3

    def __init__(self, message: str, check: str | None = None):
        super().__init__(message)
        self.check = check


class Interrupted(RobustkitError):
    """Ctrl-C, with a message saying what was kept and how to go on. The CLI exits with code 130."""

    exit_code = 130


class TrainingStopped(RobustkitError):
    """A deep-equilibrium training stopped by its time budget before its convergence gate: the
    model is not certified yet; ``--resume`` continues it. The CLI exits with code 4."""

    exit_code = 4


class RobustkitWarning(UserWarning):
    """Something the user should know about a result that is still computed (e.g. a model run on
    data other than its training data); the CLI prints it as one ``robustkit: warning:`` line."""


def exception_line(exc: BaseException, limit: int | None = None) -> str:
    """``Type: first line of the message`` (the first ``limit`` characters of it), or ``Type`` alone
    when the message is empty: an exception from code robustkit does not own, on one line."""
    text = str(exc).strip().splitlines()
    first = text[0][:limit] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def warn(message: str) -> None:
    """Issue ``message`` as a :class:`RobustkitWarning` (filterable with :mod:`warnings`)."""
    import warnings

    warnings.warn(message, RobustkitWarning, stacklevel=2)


def check_finite_fields(settings, option_names: bool = False) -> None:
    """Refuse a dataclass ``settings`` holding ∞ or NaN in a number field (or in a list of numbers):
    no robustkit setting means anything at ∞, and NaN passes every ``>=``-style check unnoticed.
    ``option_names``: name the field as its command-line option too (``lr (--lr)``)."""
    import dataclasses
    import math

    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        items = value if isinstance(value, (list, tuple)) else [value]
        bad = next((v for v in items if isinstance(v, float) and not math.isfinite(v)), None)
        if bad is not None:
            name = f"{f.name} (--{f.name.replace('_', '-')})" if option_names else f.name
            raise RobustkitError(f"{name} must be a finite number, got {bad!r}; ∞ and NaN mean nothing here, give a finite value")
