"""robustkit: train MoDL, MOL and MnM-MOL and measure their robustness and convergence.

Names follow the MnM-MOL paper (arXiv 2312.00386), see docs/maths.md §2: the CNN is the score network
``F_θ``, ``Q_θ(x) = AᴴA x + F_θ(x)/λ`` is the operator that must be (locally) m-monotone and
``H_θ = I − Q_θ`` is the operator whose (local) Lipschitz constant ``L[H_θ]`` is constrained.
"""

__version__ = "0.1.0"
