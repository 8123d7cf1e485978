"""ESPIRiT coil sensitivities from a fully sampled k-space centre (Uecker et al., MRM 2014).

For k-space ``y`` complex ``(C, H, W)`` on robustkit's centred grid (docs/maths.md §1, ``y_c = F(S_c x)``):

1. Calibration: the central block ``y_cal`` ``(C, h, w)`` (default 24 × 24), shrunk to the fully
   sampled part of the centre when a sampling ``mask`` is given.
2. Calibration (Hankel / Casorati) matrix ``Y``: one row per ``k × k`` patch, ``C k²`` columns,
   ``Y[p, (c, q)] = y_cal,c(p + q)``.
3. SVD ``Y = U Σ Vᴴ``; the kernels are the right singular vectors with ``σ > thresh · σ_max``: they
   span the signal subspace, projector ``P = Vₖᵀ conj(Vₖ)`` on column vectors.
4. Every pixel's coil vector satisfies ``G(r) S(r) = S(r)`` with the image-space operator
   ``G(r) = (1/k²) Σ_d K(d) e^{2πi d·r/N}``, ``K(d) = Σ_{q − q' = d} P[(·, q), (·, q')]``
   (``C × C``, Hermitian, eigenvalues in [0, 1]; ``r`` counted from the centre pixel ``N//2``).
5. Maps: the eigenvector of the largest eigenvalue ``λ(r)`` of ``G(r)``, kept where
   ``λ(r) > crop`` and 0 elsewhere; unit norm, so ``Σ_c |S_c|² = 1`` on the kept support.
6. Phase: an eigenvector is defined up to a phase per pixel; it is aligned with the virtual coil
   ``wᴴ S(r)`` (``w`` the principal coil combination of the calibration data), so coil-combined
   images get a smooth phase.

Pure numpy; ``G`` is built by separable DFTs of the small ``(2k − 1)²`` kernel ``K`` and
diagonalised in row chunks, so memory stays bounded for large matrices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robustkit.errors import RobustkitError

#: bytes of G(r) diagonalised at once.
_CHUNK_BYTES = 32 * 2**20


@dataclass
class Espirit:
    """The result of :func:`espirit`.

    Attributes:
        maps: coil sensitivities ``S``, complex64 ``(C, H, W)``, ``Σ_c |S_c|² = 1`` where ``λ > crop``.
        eigenvalues: the largest eigenvalue ``λ(r)`` of ``G(r)``, float32 ``(H, W)`` (≈ 1 on the object).
        calib_shape: the calibration block ``(h, w)`` actually used.
        rank: the number of kernels kept (singular values above ``thresh · σ_max``).
    """

    maps: np.ndarray
    eigenvalues: np.ndarray
    calib_shape: tuple[int, int]
    rank: int


def calibration_shape(
    shape: tuple[int, int], calib: int | tuple[int, int], kernel: int, mask: np.ndarray | None = None
) -> tuple[int, int, int, int]:
    """``(y0, x0, h, w)``: the calibration block, at most ``calib``, around the centre ``(H//2, W//2)``.

    It grows from the centre pixel one line at a time (up, down, left, right in turn), each new line
    only if it is fully sampled by ``mask`` ``(H, W)`` (every line when no mask is given). Raises if
    the block ends smaller than the kernel.
    """
    height, width = shape
    ch, cw = (calib, calib) if isinstance(calib, int) else calib
    ch, cw = min(ch, height), min(cw, width)
    sampled = np.ones(shape, bool) if mask is None else np.broadcast_to(np.asarray(mask) > 0, shape)
    y0, x0 = height // 2, width // 2
    y1, x1 = y0 + sampled[y0, x0], x0 + sampled[y0, x0]
    grown = bool(sampled[y0, x0])
    while grown:
        grown = False
        if y1 - y0 < ch and y0 > 0 and sampled[y0 - 1, x0:x1].all():
            y0, grown = y0 - 1, True
        if y1 - y0 < ch and y1 < height and sampled[y1, x0:x1].all():
            y1, grown = y1 + 1, True
        if x1 - x0 < cw and x0 > 0 and sampled[y0:y1, x0 - 1].all():
            x0, grown = x0 - 1, True
        if x1 - x0 < cw and x1 < width and sampled[y0:y1, x1].all():
            x1, grown = x1 + 1, True
    h, w = int(y1 - y0), int(x1 - x0)
    if h < kernel or w < kernel or (h - kernel + 1) * (w - kernel + 1) < 2:
        raise RobustkitError(
            f"the fully sampled k-space centre is only {h} x {w}, too small for an ESPIRiT kernel of "
            f"{kernel} x {kernel}; use a smaller kernel (--kernel) or supply coil maps"
        )
    return int(y0), int(x0), h, w


def calibration_matrix(calib: np.ndarray, kernel: int) -> np.ndarray:
    """The Hankel / Casorati matrix of ``calib`` ``(C, h, w)``: ``((h−k+1)(w−k+1), C k²)``, rows = patches."""
    patches = np.lib.stride_tricks.sliding_window_view(calib, (kernel, kernel), axis=(1, 2))
    n_coils = calib.shape[0]
    return patches.transpose(1, 2, 0, 3, 4).reshape(-1, n_coils * kernel * kernel)


def _kernel_correlation(kernels: np.ndarray, n_coils: int, k: int) -> np.ndarray:
    """``K(d) = Σ_{q−q'=d} P[(c, q), (c', q')]``, ``P = Vₖᵀ conj(Vₖ)``: complex ``(C, C, 2k−1, 2k−1)``."""
    p = (kernels.T @ kernels.conj()).reshape(n_coils, k, k, n_coils, k, k)
    corr = np.zeros((n_coils, n_coils, 2 * k - 1, 2 * k - 1), dtype=np.complex128)
    for a in range(k):
        for b in range(k):
            # entries with q' = (a, b): d = q − q' lands at index q − q' + k − 1
            block = p[:, :, :, :, a, b].transpose(0, 3, 1, 2)  # (c, c', qy, qx)
            corr[:, :, k - 1 - a : 2 * k - 1 - a, k - 1 - b : 2 * k - 1 - b] += block
    return corr


def _top_eigenpairs(g: np.ndarray, crop: float, max_iter: int, tol: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
    """Largest eigenpair of each Hermitian PSD ``g[i]`` ``(N, C, C)`` by power iteration: ``(N, C)``, ``(N,)``.

    Starts from the column of the largest diagonal entry (one power step from that coil's unit
    vector, never orthogonal to the top eigenvector where that coil sees the pixel); stops when the
    pixels whose eigenvalue exceeds ``crop`` change by less than ``tol`` (their eigenvalue gap on
    the object is large: λ₂/λ₁ ≲ 0.5, so ~20 steps reach machine precision).
    """
    j = np.argmax(np.diagonal(g, axis1=1, axis2=2).real, axis=1)
    v = np.take_along_axis(g, j[:, None, None].repeat(g.shape[1], axis=1), axis=2)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-300)
    for _ in range(max_iter):
        w = g @ v
        lam = np.linalg.norm(w, axis=1, keepdims=True)
        w = w / np.maximum(lam, 1e-300)
        change = np.linalg.norm(w - v, axis=1)[:, 0]
        v = w
        kept = lam[:, 0, 0] > crop
        if not kept.any() or change[kept].max() < tol:
            break
    values = np.einsum("nc,ncd,nd->n", v[..., 0].conj(), g, v[..., 0]).real
    return v[..., 0], values


def espirit(
    kspace: np.ndarray,
    calib: int | tuple[int, int] = 24,
    kernel: int = 6,
    thresh: float = 0.02,
    crop: float = 0.95,
    mask: np.ndarray | None = None,
    max_iter: int = 50,
) -> Espirit:
    """ESPIRiT maps (one set) of k-space ``kspace`` complex ``(C, H, W)``; see the module docstring.

    Args:
        calib: calibration block size (int or ``(h, w)``), shrunk to the sampled centre of ``mask``.
        kernel: kernel width ``k``.
        thresh: keep singular vectors with ``σ > thresh · σ_max``.
        crop: zero the maps where the eigenvalue ``λ(r) ≤ crop``.
        mask: sampling mask ``(H, W)`` (or broadcastable) when ``kspace`` is undersampled.
        max_iter: power iterations per pixel (stops earlier once the kept pixels have converged).
    """
    if kspace.ndim != 3:
        raise RobustkitError(f"ESPIRiT needs k-space of shape (coils, H, W), got {kspace.shape}")
    if not np.isfinite(kspace).all():
        raise RobustkitError("k-space contains NaN or Inf values; clean it before estimating coil maps")
    if kernel < 1 or not 0 < thresh < 1 or not 0 <= crop < 1:
        raise RobustkitError(
            f"ESPIRiT needs kernel ≥ 1, 0 < thresh < 1 and 0 ≤ crop < 1, got {kernel}, {thresh}, {crop}"
        )
    n_coils, height, width = kspace.shape
    y0, x0, h, w = calibration_shape((height, width), calib, kernel, mask)
    cal = kspace[:, y0 : y0 + h, x0 : x0 + w].astype(np.complex128)
    if not np.abs(cal).max() > 0:
        raise RobustkitError("the k-space centre is all zero; cannot estimate coil maps from it")

    _, sing, vh = np.linalg.svd(calibration_matrix(cal, kernel), full_matrices=False)
    kernels = vh[sing > thresh * sing[0]]
    corr = _kernel_correlation(kernels, n_coils, kernel)

    d = np.arange(-(kernel - 1), kernel)
    ey = np.exp(2j * np.pi * np.outer(np.arange(height) - height // 2, d) / height)  # (H, 2k−1)
    ex = np.exp(2j * np.pi * np.outer(np.arange(width) - width // 2, d) / width)  # (W, 2k−1)
    # separable DFT: first along x, then (per row chunk) along y
    half = np.tensordot(corr, ex, axes=([3], [1])) / kernel**2  # (C, C, 2k−1, W)
    half = half.transpose(2, 3, 0, 1).reshape(2 * kernel - 1, -1)  # (2k−1, W·C·C)

    # principal coil combination of the calibration data: the virtual coil that fixes the phase
    flat = cal.reshape(n_coils, -1)
    w_virtual = np.linalg.eigh(flat @ flat.conj().T)[1][:, -1]

    maps = np.zeros((height, width, n_coils), dtype=np.complex128)
    lam = np.zeros((height, width))
    rows = max(1, _CHUNK_BYTES // (16 * width * n_coils * n_coils))
    for start in range(0, height, rows):
        stop = min(height, start + rows)
        g = (ey[start:stop] @ half).reshape(-1, n_coils, n_coils)
        vectors, values = _top_eigenpairs(g, crop, max_iter)
        maps[start:stop] = vectors.reshape(stop - start, width, n_coils)
        lam[start:stop] = values.reshape(stop - start, width)

    virtual = maps @ w_virtual.conj()
    phase = np.where(np.abs(virtual) > 0, virtual.conj() / np.maximum(np.abs(virtual), 1e-300), 1.0)
    maps = maps * phase[..., None] * (lam > crop)[..., None]
    return Espirit(
        maps=maps.transpose(2, 0, 1).astype(np.complex64),
        eigenvalues=lam.astype(np.float32),
        calib_shape=(h, w),
        rank=int(kernels.shape[0]),
    )

