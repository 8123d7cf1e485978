"""One uniform object per model for the studies: :class:`ModelAdapter` (docs/api.md).

A study never reads a model's own attributes (``config.solver``, ``eval_tol``, ``last_stats``,
``H_map``, …); it asks the adapter, which knows the protocols of :mod:`robustkit.protocols`:

- a model that declares ``is_deq = True`` solves itself in ``forward(kspace, op, x0=None)`` and
  leaves per-sample :class:`~robustkit.solvers.SolverStats` in ``last_stats`` (the built-in MOL,
  MOL-SN and MnM-MOL);
- a model that only provides ``fixed_point_map(kspace, op)`` is solved by robustkit:
  ``x* = f(x*)`` from the SENSE init with :func:`robustkit.solvers.deq_fixed_point` and its
  :class:`~robustkit.protocols.SolverSettings`; the implicit backward makes ``∂x*/∂b`` available
  to attacks;
- any other model is a plain reconstructor: ``x = model(kspace, op)``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn

from robustkit.errors import RobustkitError, exception_line
from robustkit.models.base import drive_of
from robustkit.models.plugins import check_reconstructor, is_plugin_ref, load_plugin
from robustkit.physics.sense import SenseOperator, sense_init
from robustkit.protocols import ImageMap, SolverSettings


def model_name(model: nn.Module) -> str:
    """A readable name: the model's ``name`` attribute when it is a non-empty string, else its class name."""
    name = getattr(model, "name", None)
    return name if isinstance(name, str) and name else type(model).__name__


def state_dict_sha256(model: nn.Module) -> str:
    """sha256 over the state dict (sorted keys, dtypes, shapes, bytes): tells two networks apart."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        t = value.detach().cpu().contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


class ModelAdapter(nn.Module):
    """Any reconstruction network behind one interface (module docstring).

    ``adapter(kspace (B, C, H, W), op, x0=None) -> image (B, H, W)``; :meth:`solve` also returns the
    solver statistics (``None`` for a plain reconstructor), kept in ``last_stats`` too.

    Attributes:
        name: readable name used in results and reports (a zoo folder, or the model's ``name`` /
            class name).
        model: the wrapped network.
        card: the zoo card (``{}`` for a network that is not from the zoo).
        source: ``"zoo"``, ``"baseline"`` (``sense``, ``l1-wavelet``), the plug-in spec, or
            ``"python object"``.
        settings: the :class:`SolverSettings` of a fixed-point model (``None`` otherwise).
    """

    def __init__(self, name: str, model: nn.Module, card: dict[str, Any] | None = None, source: str = "zoo"):
        super().__init__()
        self.name, self.model, self.card, self.source = name, model, dict(card or {}), source
        self.train(model.training)  # the adapter's mode is the model's (attacks save and restore it)
        self.last_stats = None
        #: how the study's data differs from the card's training data (models.mismatch.card_mismatch)
        self.mismatch: dict[str, Any] = {}
        self.settings = (SolverSettings.coerce(getattr(model, "solver_settings", None), f"model {name!r}")
                         if self.is_deq else None)
        self._check_margins()

    # ------------------------------------------------------------------ what the model provides
    @property
    def native(self) -> bool:
        """The model solves its own fixed point (declares ``is_deq = True``)."""
        return getattr(self.model, "is_deq", None) is True

    @property
    def is_deq(self) -> bool:
        """A fixed-point model: it declares ``is_deq = True``, or (declaring nothing) it has
        ``fixed_point_map``. The built-in MoDL declares ``is_deq = False``: it is unrolled."""
        declared = getattr(self.model, "is_deq", None)
        if isinstance(declared, bool):
            return declared
        return callable(getattr(self.model, "fixed_point_map", None))

    @property
    def has_H(self) -> bool:  # noqa: N802 - the paper's name
        return callable(getattr(self.model, "H_map", None))

    @property
    def m(self) -> float | None:
        """Monotonicity margin ``m`` (threshold ``T = 1 − m``), ``None`` when the model has none."""
        return _number(self.model, "m")

    @property
    def delta(self) -> float | None:
        """Ball radius δ of the model's local constraint, ``None`` when it has none."""
        return _number(self.model, "delta")

    @property
    def builtin(self) -> bool:
        """One of robustkit's own models (its maps are tested; a user's are checked at every call)."""
        from robustkit.models.base import ReconModel

        return isinstance(self.model, ReconModel)

    @property
    def user_code(self) -> bool:
        """A user's network (a plug-in or a Python object), neither robustkit's model nor a baseline:
        its outputs, maps and exceptions are checked at every call, and a study probes it first."""
        return not self.builtin and self.source != "baseline"

    def _check_margins(self) -> None:
        """Refuse a model whose own ``m`` or ``delta`` cannot be a margin or a ball radius (one line)."""
        m, delta = self.m, self.delta
        if m is not None and not (0 < m < 1):
            raise RobustkitError(f"model {self.name!r} declares m = {m:g}; the margin m must lie in (0, 1) "
                                 "(T = 1 − m is the threshold of L[H]); fix the model's m attribute")
        if delta is not None and not (0 < delta < float("inf")):
            raise RobustkitError(f"model {self.name!r} declares delta = {delta:g}; the ball radius δ must be a positive "
                                 "finite number; fix the model's delta attribute")

    def _checked(self, f: ImageMap, member: str) -> ImageMap:
        """``f`` (the model's ``member`` map), refusing in one line an output that is not a finite complex
        image of its input's shape; robustkit's own models pass through unchecked."""
        if not self.user_code:
            return f

        def checked(x: torch.Tensor) -> torch.Tensor:
            y = f(x)
            if not isinstance(y, torch.Tensor) or tuple(y.shape) != tuple(x.shape) or not y.is_complex():
                got = f"{y.dtype} {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
                raise RobustkitError(f"model {self.name!r}: {member} returned {got} for the image {x.dtype} "
                                     f"{tuple(x.shape)}; it must return a complex image of the same shape (docs/api.md)")
            if not bool(torch.isfinite(y).all()):
                raise RobustkitError(f"model {self.name!r}: {member} returned NaN or Inf values; "
                                     "check the model's weights and code")
            return y

        return checked

    def missing(self, member: str) -> str:
        """Why ``member`` of the fixed-point protocol is unavailable, as a sentence fragment."""
        if self.source == "baseline":
            return f"{self.name!r} is a classical baseline with no fixed point"
        if getattr(self.model, "is_deq", None) is False:
            return f"{self.name!r} is unrolled and has no fixed point (it declares is_deq = False)"
        if not self.is_deq:
            return f"{self.name!r} ({type(self.model).__name__}) has no fixed_point_map(kspace, op)"
        return f"{self.name!r} ({type(self.model).__name__}) has no {member}"

    def require(self, member: str, study: str) -> None:
        """Raise a one-line error when the study needs ``member`` of the fixed-point protocol."""
        ok = {"fixed_point_map": self.is_deq, "H_map": self.is_deq and self.has_H,
              "m": self.m is not None, "delta": self.delta is not None}[member]
        if not ok:
            raise RobustkitError(
                f"{study} needs the fixed-point protocol member {member}; {self.missing(member)} "
                "(the protocol is in docs/api.md; pass a DEQ model that implements it)"
            )

    # ------------------------------------------------------------------ maps and solves
    def fixed_point_map(self, kspace: torch.Tensor, op: SenseOperator) -> ImageMap:
        """The update map ``f`` with ``x* = f(x*)``."""
        self.require("fixed_point_map", "this analysis")
        return self._checked(self.model.fixed_point_map(kspace, op), "fixed_point_map")

    def H_map(self, op: SenseOperator) -> ImageMap | None:  # noqa: N802 - the paper's name
        """``x ↦ H_θ(x)`` for this operator, ``None`` when the model does not define it."""
        return self._checked(self.model.H_map(op), "H_map") if self.has_H and self.is_deq else None

    def drive(self, kspace: torch.Tensor, op: SenseOperator) -> torch.Tensor:
        """``c(b)`` of ``x* = H_θ(x*) + c(b)``: the model's own ``drive(kspace, op)`` if it has one,
        else ``Aᴴb`` (the protocol's default, docs/api.md)."""
        return drive_of(self.model, kspace, op)

    def set_backward(self, kind: str) -> None:
        """Gradient through the fixed point: ``implicit``, ``jfb`` or ``phantom`` (DEQs only)."""
        if not self.is_deq:
            return
        self.settings = SolverSettings(**{**self.settings.to_dict(), "backward": kind})
        config = getattr(self.model, "config", None)
        if self.native and hasattr(config, "backward"):
            config.backward = kind

    def solve(self, kspace: torch.Tensor, op: SenseOperator, x0: torch.Tensor | None = None,
              settings: SolverSettings | None = None):
        """``(x, stats)``: the reconstruction ``(B, H, W)`` and per-sample solver statistics (``None``
        for a plain reconstructor). ``settings`` overrides the model's own for this solve."""
        if not self.user_code:
            return self._solve(kspace, op, x0, settings)
        try:
            return self._solve(kspace, op, x0, settings)
        except RobustkitError:
            raise
        except Exception as exc:  # the user's code raised: one line naming the model, the error and where
            import traceback

            frame = traceback.extract_tb(exc.__traceback__)[-1]
            raise RobustkitError(f"model {self.name!r} raised {exception_line(exc)} ({frame.filename}:{frame.lineno}); "
                                 "fix the model") from exc

    def _solve(self, kspace: torch.Tensor, op: SenseOperator, x0: torch.Tensor | None,
               settings: SolverSettings | None):
        if not self.is_deq:
            if x0 is not None:
                raise RobustkitError(f"{self.name!r} is not a fixed-point model; it cannot start from x0")
            x, stats = self.model(kspace, op), None
        elif self.native and settings is None:
            x = self.model(kspace, op) if x0 is None else self.model(kspace, op, x0)
            stats = getattr(self.model, "last_stats", None)
            if stats is None:
                raise RobustkitError(
                    f"{self.name!r} declares is_deq = True but its forward left no solver statistics in last_stats; "
                    "set last_stats (a robustkit.SolverStats), or drop is_deq and let robustkit solve fixed_point_map"
                )
        else:
            from robustkit.solvers import deq_fixed_point

            s = settings or self.settings
            with torch.no_grad():
                start = sense_init(op, kspace) if x0 is None else x0
            x, stats = deq_fixed_point(self.fixed_point_map(kspace, op), start.detach(), s.solver_kwargs(),
                                       backward=s.backward, backward_method=s.backward_method,
                                       backward_tol=s.backward_tol,
                                       backward_max_iter=s.backward_max_iter, phantom_steps=s.phantom_steps)
        self._check_output(x, kspace)
        self.last_stats = stats
        return x, stats

    def forward(self, kspace: torch.Tensor, op: SenseOperator, x0: torch.Tensor | None = None) -> torch.Tensor:
        return self.solve(kspace, op, x0)[0]

    def _check_output(self, x: Any, kspace: torch.Tensor) -> None:
        want = (kspace.shape[0], *kspace.shape[-2:])
        if not isinstance(x, torch.Tensor) or not x.is_complex() or tuple(x.shape) != want:
            got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise RobustkitError(
                f"model {self.name!r} returned {got} for k-space {tuple(kspace.shape)}; a reconstructor must "
                f"return a complex image {want} (B, H, W)"
            )
        if not bool(torch.isfinite(x.detach()).all()):
            raise RobustkitError(
                f"model {self.name!r} returned NaN or Inf values for k-space {tuple(kspace.shape)}; its numbers would "
                "be meaningless: check the model's weights and code, and the data"
            )

    # ------------------------------------------------------------------ provenance
    def meta(self) -> dict[str, Any]:
        """What a run records about the model (meta.json): name, kind, source and weights' sha256."""
        out: dict[str, Any] = {"name": self.name, "model": self.card.get("model") or model_name(self.model),
                               "source": self.source, "is_deq": self.is_deq}
        if self.source == "zoo":  # --resume refuses a change in either digest
            from robustkit.hashing import sha256_json

            out["weights_sha256"] = self.card.get("weights_sha256")
            out["config_sha256"] = sha256_json(self.card.get("config", {}))
            from robustkit.models.mismatch import failed_gate, has_modl_anchor

            failed = failed_gate(self.card)
            if failed:  # the card records a failed convergence gate
                out["gate_failed"] = failed
            if has_modl_anchor(self.card):
                out["anchor"] = "modl"
        else:
            out["weights_sha256"] = out["state_dict_sha256"] = state_dict_sha256(self.model)
            out["class"] = f"{type(self.model).__module__}.{type(self.model).__qualname__}"
        if self.settings is not None:
            out["solver"] = self.settings.to_dict()
        if self.mismatch:
            out["mismatch"] = self.mismatch
        return out


def _number(model: nn.Module, attr: str) -> float | None:
    value = getattr(model, attr, None)
    if value is None:  # the built-in models keep m and δ on their config
        value = getattr(getattr(model, "config", None), attr, None)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def adapt(model: nn.Module | ModelAdapter, name: str | None = None, source: str = "python object") -> ModelAdapter:
    """Wrap a network (checked as a reconstructor) for the studies; an adapter is returned as is."""
    if isinstance(model, ModelAdapter):
        return model
    check_reconstructor(model, "the model given")
    return ModelAdapter(name or model_name(model), model, source=source)


def object_label(ref: Any) -> str:
    """How a model reference is written in config.json: zoo names and plug-in specs as given, a
    network object as ``<name>@sha256:<first 16 hex of its state dict>`` (so resume tells two apart)."""
    if isinstance(ref, str):
        return ref
    if isinstance(ref, nn.Module):
        inner = ref.model if isinstance(ref, ModelAdapter) else ref
        name = ref.name if isinstance(ref, ModelAdapter) else model_name(ref)
        return f"{name}@sha256:{state_dict_sha256(inner)[:16]}"
    raise RobustkitError(
        f"a model must be a zoo name, a plug-in ({'FILE.py:FACTORY'}) or a torch.nn.Module, got {type(ref).__name__}"
    )


def as_model(ref: str | nn.Module, map_location: str = "cpu") -> ModelAdapter:
    """A model from a baseline name (``sense``, ``l1-wavelet[:lam=…]``), a zoo name or folder, a
    plug-in spec, or a network object, in eval mode on ``map_location``."""
    from robustkit.models.baselines import build_baseline, is_baseline_ref

    object_label(ref)  # refuses anything else with one line
    if isinstance(ref, nn.Module):
        return adapt(ref).to(map_location).eval()
    if is_baseline_ref(ref):  # before plug-ins: "l1-wavelet:lam=0.01" also contains ':'
        model = build_baseline(ref)
        return ModelAdapter(model.name, model, source="baseline").to(map_location).eval()
    if is_plugin_ref(ref):
        return adapt(load_plugin(ref), source=ref).to(map_location).eval()
    from robustkit.models.zoo import load_model, resolve

    model, card = load_model(ref, map_location=map_location)
    return ModelAdapter(resolve(ref).name, model, card, source="zoo")
