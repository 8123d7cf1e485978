"""Physics: centred FFT, linear operators, the multi-coil SENSE operator, CG, masks, coil maps."""

from robustkit.physics.cg import CGStats, conjugate_gradient
from robustkit.physics.fft import fft2c, ifft2c
from robustkit.physics.linop import LinearOperator
from robustkit.physics.sense import CoilSensitivity, Fourier, Mask, SenseOperator, sense_init

__all__ = [
    "CGStats",
    "CoilSensitivity",
    "Fourier",
    "LinearOperator",
    "Mask",
    "SenseOperator",
    "conjugate_gradient",
    "fft2c",
    "ifft2c",
    "sense_init",
]
