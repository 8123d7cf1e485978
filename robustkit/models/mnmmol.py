"""MnM-MOL (arXiv 2312.00386): a locally monotone deep-equilibrium model."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from robustkit.memo import LastResult
from robustkit.models.deq import DEQConfig, DEQModel
from robustkit.models.modl import MoDL, MoDLConfig
from robustkit.physics.sense import SENSE_ITERS, SENSE_LAM, SenseOperator, sense_init


@dataclass
class MnMMOLConfig(DEQConfig):
    lam: float = 10.0
    gamma: float = 1.0  # step γ; the reference uses 0.1, the fixed point does not depend on it
    delta: float = 0.3  # ball radius δ (relative) of the local constraint
    m: float = 0.02  # monotonicity margin: the constraint is L[H_θ](x*; δ) ≤ 1 − m
    leak: float = 0.0  # κ: H_θ(x) = (1 − κ)(x − AᴴA x) − F_θ(x)/λ (docs/maths.md §4); 0 is the paper's model
    leak_on: str = "unmeasured"  # what the leak pulls to 0: "unmeasured", (I − AᴴA) x; "image", x itself
    leak_to: str = "zero"  # where the leak pulls: "zero"; "sense", the SENSE image x_S; "modl", a frozen MoDL's image
    anchor_K: int = 10  # noqa: N815 - with leak_to = "modl": the anchor MoDL's unrolled iterations K
    anchor_cg_iters: int = 5  # … its CG steps per iteration
    anchor_mu: float = 1.001  # … its μ
    sense_lam: float = SENSE_LAM  # with leak_to = "sense": the SENSE image solves (λ_S AᴴA + μ I) x = λ_S Aᴴb …
    sense_iters: int = SENSE_ITERS  # … by this many CG steps from 0 (the defaults are the SENSE start's)


class MnMMOL(DEQModel):
    """``x⁺ = x − γ [AᴴA x − Aᴴb + F_θ(x)/λ] = (1 − γ) x + γ (H_θ(x) + Aᴴb)`` (docs/maths.md §4).

    Its fixed point solves ``Q_θ(x) = AᴴA x + F_θ(x)/λ = Aᴴb``; the iteration contracts where
    ``L[H_θ] < 1``, which training enforces locally in ``B(x*, δ‖x*‖)``.

    With a leak ``κ > 0`` (``config.leak``), ``H_θ(x) = (1 − κ)(x − AᴴA x) − F_θ(x)/λ`` and the fixed
    point solves ``AᴴA x + κ (I − AᴴA) x + F_θ(x)/λ = Aᴴb``: a small Tikhonov pull towards 0 on what
    the measurements leave open. Where ``J_F`` vanishes on the null space of ``A`` (a direction
    F_θ does not see), ``J_H`` is ``1 − κ`` there instead of 1: such directions contract by
    construction, as the ``(1 − m) I`` term does in monotone operator networks. With
    ``leak_to = "sense"`` or ``"modl"`` the pull acts on ``x − x_a`` instead, ``x_a`` the SENSE image
    or the image of the frozen MoDL ``anchor`` (:meth:`anchor_image`); ``H_θ`` is the same.
    """

    name = "mnmmol"
    config_class = MnMMOLConfig
    config: MnMMOLConfig

    def __init__(self, config: MnMMOLConfig | None = None):
        super().__init__(config)
        self.anchor: MoDL | None = None
        if self.config.leak_to == "modl":
            # the image the leak pulls towards: a MoDL with F_θ's width and depth, frozen (its weights
            # come from a warm start, robustkit.training.warm_start, and are saved with the model)
            c = self.config
            self.anchor = MoDL(MoDLConfig(width=c.width, depth=c.depth, K=c.anchor_K, cg_iters=c.anchor_cg_iters,
                                          mu=c.anchor_mu))
            self.anchor.requires_grad_(False)
        self._anchor_memo = LastResult()  # the anchor's last image

    def H(self, x: torch.Tensor, op: SenseOperator) -> torch.Tensor:  # noqa: N802 - the paper's name
        """``H_θ(x) = (1 − κ)(x − AᴴA x) − F_θ(x)/λ``, complex ``(B, H, W)``; with ``κ = 0`` the factor
        is exactly 1, so this is the paper's ``x − AᴴA x − F_θ(x)/λ`` bit for bit.

        With ``leak_on = "image"``: ``H_θ(x) = (1 − κ) x − AᴴA x − F_θ(x)/λ``, fixed point
        ``(AᴴA + κ I) x + F_θ(x)/λ = Aᴴb`` (MoDL's ``(μ − 1)/λ`` term, larger). F_θ can cancel this
        pull on image content with a local map (``−λκ x``), where the ``unmeasured`` pull
        ``κ (I − AᴴA) x`` holds the aliasing of the mask, which a small CNN cannot reproduce."""
        r = x - op.normal(x)
        return r - self.config.leak * self._leaked(x, r) - self.cnn(x) / self.lam_value

    def _leaked(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """What the leak acts on, given ``r = (I − AᴴA) x``: ``r`` (``leak_on = "unmeasured"``) or ``x``
        (``"image"``). The one place the choice is made, for ``H_θ`` and for :meth:`drive`."""
        return x if self.config.leak_on == "image" else r

    def anchor_image(self, kspace: torch.Tensor, op: SenseOperator) -> torch.Tensor | None:
        """The image ``x_a`` the leak pulls towards, complex ``(B, H, W)``: the SENSE image
        (``leak_to = "sense"``), the frozen anchor MoDL's reconstruction (``"modl"``), or ``None``
        (``"zero"``). Differentiable in ``kspace`` (attacks see it); the anchor's weights are fixed."""
        if self.config.leak_to == "sense":
            return sense_init(op, kspace, lam=self.config.sense_lam, iters=self.config.sense_iters)
        if self.config.leak_to == "modl":
            return self._anchor_reconstruction(kspace, op)
        return None

    def _anchor_reconstruction(self, kspace: torch.Tensor, op: SenseOperator) -> torch.Tensor:
        """The anchor MoDL's image of ``kspace`` ``(B, C, H, W)`` → ``(B, H, W)``.

        The model remembers its last result (:class:`~robustkit.memo.LastResult`), as
        :func:`~robustkit.physics.sense.sense_init` does: the same ``kspace`` tensor and operator,
        unchanged since (version counters of the k-space, the coil maps, the mask and the anchor's
        weights and buffers), in the same train/eval mode, get a copy of it instead of a second pass
        of the MoDL, the same values bit for bit. A training step asks for it twice (the solve's
        drive and the slow-mode estimate's), an audit once per estimate. Not when autograd needs the
        pass's graph (``kspace``, the coil maps or an anchor weight require grad, with grad
        enabled), nor for inference-mode tensors. :meth:`load_state_dict` and optimizers are seen;
        changes made through ``.data`` are not."""
        anchor = self.anchor
        tensors = (kspace, op.maps, op.mask, *anchor.parameters(), *anchor.buffers())
        return self._anchor_memo(lambda: anchor(kspace, op), (kspace, op), tensors, (anchor.training,))

    def drive(self, kspace: torch.Tensor, op: SenseOperator) -> torch.Tensor:
        """The constant part ``c(b)`` of the update ``f(x) = H_θ(x) + c(b)``: ``Aᴴb``, plus
        ``κ (I − AᴴA) x_a`` (or ``κ x_a``) when the leak pulls towards an image ``x_a`` of the
        measurements (:meth:`anchor_image`): the pull is then on ``x − x_a``, and ``H_θ`` is unchanged."""
        c = op.adjoint(kspace)
        x_a = self.anchor_image(kspace, op) if self.config.leak > 0 else None
        if x_a is not None:
            c = c + self.config.leak * self._leaked(x_a, x_a - op.normal(x_a))
        return c

    def fixed_point_map(self, kspace: torch.Tensor, op: SenseOperator):
        drive, g = self.drive(kspace, op), self.config.gamma

        def f(x: torch.Tensor) -> torch.Tensor:
            step = self.H(x, op) + drive
            return step if g == 1.0 else (1 - g) * x + g * step
        return f

    def iteration(self, x: torch.Tensor, kspace: torch.Tensor, op: SenseOperator) -> torch.Tensor:
        """One step ``f(x)``. It builds the drive ``c(b)`` for this one call; a loop of steps takes
        :meth:`fixed_point_map` once, which builds it once (solvers and estimators do)."""
        return self.fixed_point_map(kspace, op)(x)
