"""Multi-coil Cartesian SENSE: ``A x = M ⊙ F(S ⊙ x)``, ``Aᴴ y = Σ_c conj(S_c) ⊙ Fᴴ(M ⊙ y_c)`` (docs/maths.md §1).

Shapes: image ``x`` complex ``(B, H, W)``; coil maps ``S`` complex ``(B, C, H, W)``; mask ``M``
real 0/1 broadcastable to ``(B, 1, H, W)``; k-space ``y`` complex ``(B, C, H, W)``.
"""

from __future__ import annotations

import torch

from robustkit.errors import RobustkitError
from robustkit.memo import LastResult
from robustkit.physics.cg import CGStats, conjugate_gradient
from robustkit.physics.fft import IMAGE_DIMS, fft2c, ifft2c
from robustkit.physics.linop import LinearOperator


def as_mask(mask: torch.Tensor, ndim: int = 4) -> torch.Tensor:
    """Return ``mask`` as a real tensor broadcastable to ``(B, 1, H, W)`` (accepts ``(H, W)``, ``(B, H, W)``)."""
    if mask.is_complex():
        mask = mask.real
    while mask.ndim < ndim:
        mask = mask.unsqueeze(-3) if mask.ndim == ndim - 1 else mask.unsqueeze(0)
    return mask


class Fourier(LinearOperator):
    """Centred orthonormal 2-D FFT over the last two dims, ``(..., H, W) → (..., H, W)``."""

    def __init__(self, shape: tuple[int, ...]):
        self.ishape = self.oshape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fft2c(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return ifft2c(y)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Mask(LinearOperator):
    """Sampling mask ``M ⊙ y`` (self-adjoint, idempotent) on k-space ``(B, C, H, W)``."""

    def __init__(self, mask: torch.Tensor, shape: tuple[int, ...]):
        self.mask = as_mask(mask)
        self.ishape = self.oshape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask

    adjoint = forward
    normal = forward


class CoilSensitivity(LinearOperator):
    """Coil expansion ``S x``: ``(B, H, W) → (B, C, H, W)``; adjoint ``Σ_c conj(S_c) y_c``."""

    def __init__(self, maps: torch.Tensor):
        self.maps = maps
        b, c, h, w = maps.shape
        self.ishape, self.oshape = (b, h, w), (b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maps * x.unsqueeze(-3)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return (self.maps.conj() * y).sum(dim=-3)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        return (self.maps.abs() ** 2).sum(dim=-3) * x


class SenseOperator(LinearOperator):
    """``A = M F S``: multi-coil Cartesian SENSE, batched, native complex tensors.

    Args:
        maps: coil sensitivities ``S``, complex ``(B, C, H, W)``.
        mask: sampling mask ``M``, real 0/1, ``(H, W)``, ``(B, H, W)`` or ``(B, 1, H, W)``.
    """

    def __init__(self, maps: torch.Tensor, mask: torch.Tensor):
        if maps.ndim != 4 or not maps.is_complex():
            raise RobustkitError(
                f"coil maps must be a complex tensor of shape (B, C, H, W), got {tuple(maps.shape)} "
                f"{maps.dtype}; add a batch dimension or convert to complex"
            )
        mask = as_mask(mask).to(device=maps.device, dtype=maps.real.dtype)
        if mask.shape[-2:] != maps.shape[-2:]:
            raise RobustkitError(
                f"mask of size {tuple(mask.shape[-2:])} does not match coil maps of size "
                f"{tuple(maps.shape[-2:])}; build the mask for the k-space matrix size"
            )
        self.maps = maps
        self.mask = mask
        b, c, h, w = maps.shape
        self.ishape, self.oshape = (b, h, w), (b, c, h, w)
        self._shifted: tuple[torch.Tensor, torch.Tensor] | None = None
        self._sense_memo = LastResult()  # sense_init's last image

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mask * fft2c(self.maps * x.unsqueeze(-3))

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return (self.maps.conj() * ifft2c(self.mask * y)).sum(dim=-3)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """``AᴴA x = Sᴴ Fᴴ M F S x`` (M idempotent, so the mask is applied once).

        The centring shifts of :func:`fft2c` / :func:`ifft2c` are permutations that commute with
        the pointwise products, so ``AᴴA x = fftshift(Σ_c conj(S̃_c) ⊙ ifft2(M̃ ⊙ fft2(S̃_c ⊙ x̃)))``
        with ``S̃ = ifftshift(S)``, ``M̃ = ifftshift(M)`` (built once) and ``x̃ = ifftshift(x)``: two
        ``(B, H, W)`` shifts per product instead of four ``(B, C, H, W)`` ones, and the same values
        to rounding (docs/performance.md §6).
        """
        maps, mask = self._shifted_factors()
        x = torch.fft.ifftshift(x, dim=IMAGE_DIMS).unsqueeze(-3)
        coil = torch.fft.ifft2(mask * torch.fft.fft2(maps * x, norm="ortho"), norm="ortho")
        return torch.fft.fftshift((maps.conj() * coil).sum(dim=-3), dim=IMAGE_DIMS)

    def _shifted_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ifftshift(S), ifftshift(M))`` over the image axes, built on first use."""
        if self._shifted is None:
            self._shifted = (torch.fft.ifftshift(self.maps, dim=IMAGE_DIMS), torch.fft.ifftshift(self.mask, dim=IMAGE_DIMS))
        return self._shifted

    def to(self, device: torch.device | str) -> "SenseOperator":
        return SenseOperator(self.maps.to(device), self.mask.to(device))

    def __getitem__(self, index) -> "SenseOperator":
        """The operator of a sub-batch (``index`` a slice or index tensor over B)."""
        mask = self.mask if self.mask.shape[0] == 1 else self.mask[index]
        return SenseOperator(self.maps[index], mask)


#: the SENSE image's settings (*ref*): ``SENSE_ITERS`` CG steps on ``(λ AᴴA + μ I) x = λ Aᴴ b``, the
#: DEQs' start, the ``sense`` baseline and MnM-MOL's default SENSE anchor.
SENSE_LAM: float = 100.0
SENSE_MU: float = 1.001
SENSE_ITERS: int = 50


def sense_init(
    op: SenseOperator,
    kspace: torch.Tensor,
    lam: float = SENSE_LAM,
    mu: float = SENSE_MU,
    iters: int = SENSE_ITERS,
) -> torch.Tensor:
    """SENSE / regularised least-squares init (*ref*): ``iters`` CG steps from 0 on
    ``(λ AᴴA + μ I) x = λ Aᴴ b``. ``kspace`` ``(B, C, H, W)`` → image ``(B, H, W)``.

    The operator remembers its last result per settings (:class:`~robustkit.memo.LastResult`): the same
    ``kspace`` tensor, unchanged since (its version counter, and the coil maps' and mask's), with the
    same settings, gets a copy of it instead of a second CG solve, the same values bit for bit. Not
    when autograd needs the solve's graph (``kspace`` or the coil maps require grad, with grad
    enabled), nor for inference-mode tensors. A cold solve of a DEQ whose drive uses the SENSE
    image (MnM-MOL with ``leak_to = "sense"``) asks for it twice: as its start and in its drive.
    """
    return op._sense_memo(lambda: sense_solve(op, kspace, lam=lam, mu=mu, iters=iters)[0], (kspace,),
                          (kspace, op.maps, op.mask), (float(lam), float(mu), int(iters)))


def sense_solve(
    op: SenseOperator, kspace: torch.Tensor, lam: float = SENSE_LAM, mu: float = SENSE_MU, iters: int = SENSE_ITERS
) -> tuple[torch.Tensor, CGStats]:
    """:func:`sense_init` returning the CG statistics too."""
    rhs = lam * op.adjoint(kspace)
    return conjugate_gradient(lambda v: lam * op.normal(v) + mu * v, rhs, max_iter=iters)
