"""Running under ``torchrun``: one process per rank, PyTorch's own process group (docs/distributed.md).

``torchrun --nproc_per_node N -m robustkit ...`` starts N processes and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` (and ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) in each.
:func:`dist_context` reads them, joins the process group once (gloo on CPU, NCCL on CUDA, one
device ``cuda:LOCAL_RANK`` per rank) and returns a :class:`DistContext`; without them it returns the
single-process context (rank 0 of 1) and starts nothing. Every collective waits at most
:func:`timeout` (``$ROBUSTKIT_DIST_TIMEOUT`` minutes, default :data:`DEFAULT_TIMEOUT_MINUTES`), so a
rank that died or hangs makes the others stop with an error instead of waiting forever;
:func:`collective_errors` turns that error into one :class:`~robustkit.errors.RobustkitError` line.

API (small on purpose; training and the sharded studies both use it):

- ``dist_context(device="auto") -> DistContext(rank, world_size, local_rank, device, is_main)``
- ``is_main() -> bool``, ``barrier()``, ``all_reduce(t, op)``, ``all_gather_object(obj)``
- ``collective_errors()`` (context manager), ``shutdown()`` (also run at exit)
- ``command_line() -> str``: the command as a user reruns it (``robustkit ARGS``, also under torchrun)
"""

from __future__ import annotations

import atexit
import datetime
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from robustkit.errors import RobustkitError


def command_line() -> str:
    """This process's command as a user would type it again, shell-quoted: ``robustkit ARGS``. Under
    ``torchrun … -m robustkit`` or ``python -m robustkit`` the program is ``robustkit/__main__.py``,
    which is recorded as ``robustkit`` (the ranks and world size are recorded beside it)."""
    import shlex
    import sys
    from pathlib import Path

    program = Path(sys.argv[0]).name
    program = "robustkit" if program == "__main__.py" else program
    return " ".join(shlex.quote(a) for a in [program, *sys.argv[1:]])

#: minutes a collective (all-reduce, barrier, the rendezvous) waits for the other ranks.
DEFAULT_TIMEOUT_MINUTES = 10.0

#: environment variable overriding :data:`DEFAULT_TIMEOUT_MINUTES`.
TIMEOUT_ENV = "ROBUSTKIT_DIST_TIMEOUT"


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size`` (``local_rank`` on its node), the
    ``device`` it computes on, and ``is_main`` (rank 0: the one that writes files)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    is_main: bool

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1

    @property
    def backend(self) -> str | None:
        """``"gloo"`` (CPU), ``"nccl"`` (CUDA) or ``None`` for a single process."""
        return None if not self.distributed else ("nccl" if self.device.type == "cuda" else "gloo")


_context: DistContext | None = None


def launched() -> bool:
    """True when ``torchrun`` (or a launcher setting the same variables) started this process
    with a world size above 1."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def timeout() -> datetime.timedelta:
    """How long a collective waits: ``$ROBUSTKIT_DIST_TIMEOUT`` minutes, else the default."""
    text = os.environ.get(TIMEOUT_ENV)
    try:
        minutes = DEFAULT_TIMEOUT_MINUTES if text is None else float(text)
    except ValueError:
        minutes = -1.0
    if not minutes > 0:
        raise RobustkitError(f"{TIMEOUT_ENV}={text!r} is not a positive number of minutes; e.g. {TIMEOUT_ENV}=10")
    return datetime.timedelta(minutes=minutes)


def _env_int(name: str, default: int | None = None) -> int:
    text = os.environ.get(name)
    if text is None and default is not None:
        return default
    try:
        return int(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise RobustkitError(f"${name}={text!r} is not an integer; start the ranks with torchrun, which sets it") from None


def _rank_device(device: str, local_rank: int, local_world: int) -> torch.device:
    """The device of a rank: ``cuda:LOCAL_RANK`` (one GPU per rank) or ``cpu``."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return torch.device("cpu")
    if device != "cuda":
        raise RobustkitError(f"--device {device!r} under torchrun: choose cpu, cuda or auto")
    if not torch.cuda.is_available():
        raise RobustkitError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    count = torch.cuda.device_count()
    if count < local_world:
        raise RobustkitError(f"--device cuda with {local_world} ranks on this node but only {count} GPU(s): one GPU per "
                             f"rank; use torchrun --nproc_per_node {count} or --device cpu")
    from robustkit.device import full_fp32

    full_fp32()
    return torch.device("cuda", local_rank)


def dist_context(device: str = "auto") -> DistContext:
    """This process's :class:`DistContext`; under ``torchrun`` joins the process group (once).

    ``device`` is the CLI's ``--device`` (``auto``, ``cpu`` or ``cuda``). Single process: rank 0
    of 1 on :func:`robustkit.device.resolve_device`. Raises :class:`RobustkitError` before joining
    when ranks outnumber this node's GPUs or the environment is malformed.
    """
    global _context
    if _context is not None:
        return _context
    if not launched():
        from robustkit.device import resolve_device

        return DistContext(0, 1, 0, resolve_device(device), True)
    rank, world = _env_int("RANK"), _env_int("WORLD_SIZE")
    local_rank = _env_int("LOCAL_RANK", 0)
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    if not 0 <= rank < world or not 0 <= local_rank < local_world:
        raise RobustkitError(f"RANK={rank}, LOCAL_RANK={local_rank} do not fit WORLD_SIZE={world}, LOCAL_WORLD_SIZE={local_world}; "
                             "start the ranks with torchrun")
    dev = _rank_device(device, local_rank, local_world)
    import torch.distributed as dist

    if not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        with collective_errors("joining the process group"):
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=timeout())
        atexit.register(shutdown)
    _context = DistContext(rank, world, local_rank, dev, rank == 0)
    return _context


def is_main() -> bool:
    """True on rank 0 (and in a single process)."""
    return _context is None or _context.is_main


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if _context is not None and _context.distributed:
        import torch.distributed as dist

        with collective_errors("waiting at a barrier"):
            dist.barrier()


def all_reduce(tensor: torch.Tensor, op: str = "mean") -> torch.Tensor:
    """``tensor`` reduced over the ranks (``"mean"``, ``"sum"`` or ``"max"``), in place and
    returned; unchanged in a single process. Its device must be the rank's device."""
    if _context is None or not _context.distributed:
        return tensor
    import torch.distributed as dist

    reduce_op = {"mean": dist.ReduceOp.SUM, "sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op]
    with collective_errors("reducing across ranks"):
        dist.all_reduce(tensor, op=reduce_op)
    if op == "mean":
        tensor /= _context.world_size
    return tensor


def all_gather_object(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, …]`` on every rank (``[obj]`` in a single process)."""
    if _context is None or not _context.distributed:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * _context.world_size
    with collective_errors("gathering from the ranks"):
        dist.all_gather_object(out, obj)
    return out


@contextmanager
def collective_errors(what: str = "talking to the other ranks") -> Iterator[None]:
    """Turn a failed or timed-out collective into one :class:`RobustkitError` line naming this
    rank, the likely cause (another rank died or hangs) and the fix."""
    try:
        yield
    except RobustkitError:
        raise
    except (RuntimeError, TimeoutError) as exc:
        import torch.distributed as dist

        if not isinstance(exc, (getattr(dist, "DistError", ()), TimeoutError)) and not _looks_collective(str(exc)):
            raise
        rank = _context.rank if _context is not None else _env_int("RANK", 0)
        first = _summary(str(exc))
        raise RobustkitError(
            f"rank {rank}: {what} failed ({type(exc).__name__}: {first}); another rank probably died or hung past the "
            f"{timeout().total_seconds() / 60:g}-minute timeout (${TIMEOUT_ENV}) — see its message above; "
            "completed checkpoints are kept and --resume continues"
        ) from None


def _summary(message: str, limit: int = 160) -> str:
    """The first sentence of a backend error, without its C++ source location."""
    import re

    text = re.sub(r"\[[^\]\s]+:\d+\]\s*", "", " ".join(message.split()))
    sentence = text.split(". ")[0]
    return sentence if len(sentence) <= limit else sentence[:limit] + "…"


def _looks_collective(message: str) -> bool:
    """Whether a plain ``RuntimeError`` comes from the process group (gloo/NCCL transport)."""
    markers = ("gloo", "nccl", "connection closed", "connection reset", "timed out", "timeout", "c10d", "socket")
    low = message.lower()
    return any(m in low for m in markers)


def shutdown() -> None:
    """Leave the process group (idempotent; registered at exit by :func:`dist_context`)."""
    global _context
    _context = None
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # at interpreter exit a dead peer may make this fail; nothing is left to save
        pass
