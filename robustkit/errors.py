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


def warn(message: str) -> None:
    """Issue ``message`` as a :class:`RobustkitWarning` (filterable with :mod:`warnings`)."""
    import warnings

    warnings.warn(message, RobustkitWarning, stacklevel=2)
