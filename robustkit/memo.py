"""One remembered result of a costly, deterministic tensor computation.

A DEQ solve asks for some images of its measurements more than once: the SENSE image as its start
and in its drive (:func:`robustkit.physics.sense.sense_init`), the anchor MoDL's image in the drive
of the solve and of the slow-mode estimate (:class:`robustkit.models.mnmmol.MnMMOL`). A
:class:`LastResult` keeps the last one and hands out copies while its inputs are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


class LastResult:
    """The last result of one computation, reused while its inputs are the same and unchanged.

    ``memo(compute, same, tensors, settings)`` returns ``compute()``, or a clone of the result it
    kept when every object of ``same`` is the one given last time (identity, not equality), the
    version counters of ``tensors`` (bumped by every in-place change) are the same, and
    ``settings`` compare equal. The clone keeps a caller's in-place change off what is kept.

    Nothing is reused or kept when autograd needs the computation's graph (grad enabled and a
    tensor of ``tensors`` requires grad), nor for an inference tensor, which has no version
    counter. Changes made through ``.data`` bypass version counters and are not seen.
    """

    __slots__ = ("_same", "_key", "_value")

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Forget the kept result."""
        self._same: tuple[object, ...] = ()
        self._key: tuple | None = None
        self._value: torch.Tensor | None = None

    def __call__(self, compute: Callable[[], torch.Tensor], same: tuple[object, ...],
                 tensors: Sequence[torch.Tensor], settings: tuple = ()) -> torch.Tensor:
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            return compute()
        if any(t.is_inference() for t in tensors):
            return compute()
        key = (tuple(t._version for t in tensors), settings)
        if (self._value is not None and len(same) == len(self._same)
                and all(a is b for a, b in zip(same, self._same)) and key == self._key):
            return self._value.clone()
        value = compute()
        self._same, self._key, self._value = same, key, value.detach().clone()
        return value
