"""One remembered result of a costly, deterministic tensor computation.

A DEQ solve asks for some images of its measurements more than once: the SENSE image as its start
and in its drive (:func:`robustkit.physics.sense.sense_init`), the anchor MoDL's image in the drive
of the solve and of the slow-mode estimate (:class:`robustkit.models.mnmmol.MnMMOL`). A
:class:`LastResult` keeps the last one per settings and hands out copies while its inputs are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


class LastResult:
    """The last result of one computation per settings, reused while its inputs are the same and unchanged.

    ``memo(compute, same, tensors, settings)`` returns ``compute()``, or a clone of the result it
    kept for these ``settings`` when every object of ``same`` is the one given then (identity, not
    equality) and the version counters of ``tensors`` (bumped by every in-place change) are the
    same. The clone keeps a caller's in-place change off what is kept.

    One result is kept per ``settings`` value, for the ``slots`` most recently used values (the
    oldest is dropped): a caller that asks for two settings in turn on the same inputs (an MnM-MOL
    whose SENSE start and SENSE anchor use different λ_S) does not evict one with the other.

    Nothing is reused or kept when autograd needs the computation's graph (grad enabled and a
    tensor of ``tensors`` requires grad), nor for an inference tensor, which has no version
    counter. Changes made through ``.data`` bypass version counters and are not seen.
    """

    __slots__ = ("_kept", "_slots")

    def __init__(self, slots: int = 2) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self._slots = slots
        self.clear()

    def clear(self) -> None:
        """Forget every kept result."""
        # settings -> (objects, version counters, value), oldest first
        self._kept: dict[tuple, tuple[tuple[object, ...], tuple[int, ...], torch.Tensor]] = {}

    def __call__(self, compute: Callable[[], torch.Tensor], same: tuple[object, ...],
                 tensors: Sequence[torch.Tensor], settings: tuple = ()) -> torch.Tensor:
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            return compute()
        if any(t.is_inference() for t in tensors):
            return compute()
        versions = tuple(t._version for t in tensors)
        kept = self._kept.pop(settings, None)
        if (kept is not None and len(same) == len(kept[0])
                and all(a is b for a, b in zip(same, kept[0])) and versions == kept[1]):
            self._kept[settings] = kept  # now the most recent
            return kept[2].clone()
        value = compute()
        self._kept[settings] = (same, versions, value.detach().clone())
        while len(self._kept) > self._slots:
            del self._kept[next(iter(self._kept))]
        return value
