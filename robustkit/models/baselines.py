"""Classical baselines: CG-SENSE and ℓ1-wavelet compressed sensing (docs/maths.md §13).

They are reconstructors like the networks (``model(kspace (B, C, H, W), op) -> image (B, H, W)``,
complex), with no weights and no fixed point: a study runs them next to the networks and attacks
them the same way, by automatic differentiation through a fixed number of unrolled iterations.

- ``sense``: ``iters`` conjugate-gradient steps from 0 on ``(λ AᴴA + μ I) x = λ Aᴴ b``, the
  initialisation of the DEQs (:func:`robustkit.physics.sense.sense_solve`).
- ``l1-wavelet``: ``min_x ½‖A x − b‖² + λ ‖Ψ x‖₁`` with Ψ the orthonormal 2-D Haar transform
  (PyTorch Wavelet Toolbox, ``ptwt``) applied to the real and imaginary parts, solved by
  ``iters`` FISTA steps from 0 with step ``1/L``, ``L = maxₚ Σ_c |S_c(p)|² ≥ ‖AᴴA‖``.

A model reference names a baseline as ``sense`` or ``l1-wavelet``, optionally with settings:
``l1-wavelet:lam=0.003,iters=200`` (:func:`parse_baseline`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from robustkit.choices import BASELINE_NAMES
from robustkit.errors import RobustkitError
from robustkit.physics.sense import SENSE_ITERS, SENSE_LAM, SENSE_MU, SenseOperator, sense_solve

#: the settings of each baseline and their defaults (docs/maths.md §13; the ℓ1 λ was chosen by
#: ``python scripts/choose_l1_lambda.py`` on the built-in validation split at 4×).
DEFAULTS: dict[str, dict[str, float]] = {
    "sense": {"lam": SENSE_LAM, "mu": SENSE_MU, "iters": SENSE_ITERS},
    "l1-wavelet": {"lam": 0.00003, "iters": 100, "levels": 4},
}
_INTEGER = ("iters", "levels")


def is_baseline_ref(ref: Any) -> bool:
    """Whether a model reference names a built-in baseline (``sense``, ``l1-wavelet[:k=v,...]``)."""
    return isinstance(ref, str) and ref.split(":", 1)[0] in BASELINE_NAMES


def parse_baseline(ref: str) -> tuple[str, dict[str, float]]:
    """``(name, settings)`` of ``NAME`` or ``NAME:key=value,key=value``; unknown keys and bad
    values are one-line errors naming the allowed keys."""
    name, _, rest = ref.partition(":")
    if name not in BASELINE_NAMES:
        raise RobustkitError(f"{ref!r} is not a baseline; choose from {', '.join(BASELINE_NAMES)}")
    settings = dict(DEFAULTS[name])
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in settings:
            raise RobustkitError(
                f"{ref!r}: {item!r} is not a setting of {name}; write {name}:KEY=VALUE with KEY one of "
                f"{', '.join(settings)} (e.g. {name}:{next(iter(settings))}={settings[next(iter(settings))]:g})"
            )
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        integer = key in _INTEGER
        if not math.isfinite(number) or number <= 0 or (integer and number != int(number)):
            kind = "an integer ≥ 1" if integer else "a number > 0"
            raise RobustkitError(f"{ref!r}: {key} must be {kind}, got {value!r}")
        settings[key] = int(number) if integer else number
    return name, settings


def baseline_label(name: str, settings: dict[str, float]) -> str:
    """The results' model name: ``name``, plus ``_key<value>`` for each setting off its default
    (file-name safe, e.g. ``l1-wavelet_lam0.01``)."""
    return name + "".join(f"_{k}{v:g}" for k, v in settings.items() if v != DEFAULTS[name][k])


def build_baseline(ref: str) -> nn.Module:
    """The baseline a reference names, in eval mode (it has no weights)."""
    name, settings = parse_baseline(ref)
    model = SenseBaseline(**settings) if name == "sense" else L1Wavelet(**settings)
    model.name = baseline_label(name, settings)
    return model.eval()


class _Baseline(nn.Module):
    """Shared by the baselines: no fixed point; settings kept as buffers so that a run's record
    (the state dict's sha256, docs/api.md) tells two settings apart."""

    is_deq = False
    baseline = True
    kind: str

    def __init__(self, **settings: float):
        super().__init__()
        self.settings = dict(settings)
        for key, value in settings.items():
            self.register_buffer(key, torch.tensor(float(value), dtype=torch.float64))

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v:g}" for k, v in self.settings.items())

    def check_shape(self, shape: tuple[int, int]) -> None:
        """Raise a one-line error when the baseline cannot reconstruct ``H × W`` images (before a study runs)."""


class SenseBaseline(_Baseline):
    """CG-SENSE: ``iters`` CG steps from 0 on ``(λ AᴴA + μ I) x = λ Aᴴ b`` (no early stop, so the
    map ``b ↦ x`` is a fixed composition of differentiable steps)."""

    kind = "sense"

    def __init__(self, lam: float = SENSE_LAM, mu: float = SENSE_MU, iters: int = SENSE_ITERS):
        super().__init__(lam=lam, mu=mu, iters=iters)

    def forward(self, kspace: torch.Tensor, op: SenseOperator) -> torch.Tensor:
        s = self.settings
        return sense_solve(op, kspace, lam=s["lam"], mu=s["mu"], iters=int(s["iters"]))[0]


# ----------------------------------------------------------------------------- ℓ1-wavelet


def haar_levels(shape: tuple[int, int], levels: int) -> int:
    """Haar levels used on an ``H × W`` image: at most ``levels``, and only as many as both sides
    halve evenly (so that Ψ stays orthonormal); an odd side is refused."""
    h, w = shape
    n = 0
    while n < levels and h % 2 == 0 and w % 2 == 0:
        h, w, n = h // 2, w // 2, n + 1
    if n == 0:
        raise RobustkitError(
            f"l1-wavelet needs even image sides for its orthonormal Haar transform, got {shape[0]}x{shape[1]}; "
            "crop the data to even sides (robustkit data prepare --crop)"
        )
    return n


class Wavelet:
    """Orthonormal 2-D Haar transform Ψ of complex images ``(B, H, W)`` (real and imaginary parts
    transformed alike), coefficients as a list of complex tensors: ``[a_L, (h_L, v_L, d_L), …]``."""

    wavelet = "haar"

    def __init__(self, shape: tuple[int, int], levels: int):
        self.levels = haar_levels(shape, levels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        import ptwt

        b = x.shape[0]
        coeffs = ptwt.wavedec2(torch.cat([x.real, x.imag]), self.wavelet, mode="zero", level=self.levels)
        flat = [coeffs[0], *(band for detail in coeffs[1:] for band in detail)]
        return [torch.complex(c[:b], c[b:]) for c in flat]

    def adjoint(self, bands: list[torch.Tensor]) -> torch.Tensor:
        import ptwt
        from ptwt.constants import WaveletDetailTuple2d

        stacked = [torch.cat([c.real, c.imag]) for c in bands]
        coeffs = [stacked[0]] + [WaveletDetailTuple2d(*stacked[1 + 3 * k: 4 + 3 * k]) for k in range(self.levels)]
        x = ptwt.waverec2(coeffs, self.wavelet)
        b = x.shape[0] // 2
        return torch.complex(x[:b], x[b:])


def soft_threshold(z: torch.Tensor, tau: torch.Tensor | float) -> torch.Tensor:
    """``soft(z, τ) = z · max(|z| − τ, 0) / |z|`` on the complex magnitude (0 where ``z = 0``):
    the proximal map of ``τ‖·‖₁`` on complex numbers."""
    mag = z.abs()
    return z * (torch.relu(mag - tau) / mag.clamp_min(torch.finfo(mag.dtype).tiny))


def l1_objective(x: torch.Tensor, kspace: torch.Tensor, op: SenseOperator, lam: float, psi: Wavelet) -> torch.Tensor:
    """``½‖A x − b‖² + λ‖Ψ x‖₁`` per sample, shape ``(B,)``."""
    fit = 0.5 * (op.forward(x) - kspace).abs().pow(2).flatten(1).sum(1)
    return fit + lam * sum(c.abs().flatten(1).sum(1) for c in psi.forward(x))


def fista(kspace: torch.Tensor, op: SenseOperator, lam: float, iters: int, levels: int = 4) -> torch.Tensor:
    """``iters`` FISTA steps (Beck & Teboulle 2009) from ``x₀ = z₀ = 0``, ``t₀ = 1``:

    ``x_{k+1} = Ψᴴ soft(Ψ(z_k − Aᴴ(A z_k − b)/L), λ/L)``,
    ``t_{k+1} = (1 + √(1 + 4t_k²))/2``, ``z_{k+1} = x_{k+1} + (t_k − 1)/t_{k+1} (x_{k+1} − x_k)``,

    with ``L = maxₚ Σ_c |S_c(p)|²`` per sample (≥ ‖AᴴA‖ since ‖M F‖ ≤ 1). Differentiable in ``b``
    through the unrolled steps. ``kspace`` ``(B, C, H, W)`` → image ``(B, H, W)``."""
    psi = Wavelet(tuple(kspace.shape[-2:]), levels)
    lipschitz = (op.maps.abs() ** 2).sum(-3).flatten(1).amax(1).clamp_min(1e-12).reshape(-1, 1, 1)
    aty = op.adjoint(kspace)
    x = torch.zeros_like(aty)
    z, t = x, 1.0
    for _ in range(iters):
        grad = op.normal(z) - aty
        x_new = psi.adjoint([soft_threshold(c, lam / lipschitz) for c in psi.forward(z - grad / lipschitz)])
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        z = x_new + ((t - 1) / t_new) * (x_new - x)
        x, t = x_new, t_new
    return x


class L1Wavelet(_Baseline):
    """ℓ1-wavelet compressed sensing: ``min_x ½‖A x − b‖² + λ‖Ψ x‖₁`` by ``iters`` FISTA steps
    (:func:`fista`); Ψ orthonormal Haar with up to ``levels`` levels."""

    kind = "l1-wavelet"

    def __init__(self, lam: float = 0.00003, iters: int = 100, levels: int = 4):
        super().__init__(lam=lam, iters=iters, levels=levels)

    def check_shape(self, shape: tuple[int, int]) -> None:
        haar_levels(shape, int(self.settings["levels"]))

    def forward(self, kspace: torch.Tensor, op: SenseOperator) -> torch.Tensor:
        s = self.settings
        return fista(kspace, op, s["lam"], int(s["iters"]), int(s["levels"]))
