"""Hyperparameter-conditioned layers: the STN best-response approximation ``w(lambda)``.

Each layer keeps elementwise weights ``W_e, b_e`` (a copy of the plain layer), response weights
``W_h, b_h`` of the same shapes and a gate matrix ``V`` (``2·out × n_hyper``). With the
hypernetwork input ``h`` (normalised unconstrained hyperparameters, one draw per minibatch):

    g = V h,    y = (W_e x + b_e) + g[:out] ⊙ (W_h x) + g[out:] ⊙ b_h

(MacKay et al., ICLR 2019). Because ``h`` is shared by the minibatch, the gated term is folded into
the weights once per step, ``W = W_e + diag(g[:out]) W_h``, and the layer runs a single matmul:
the overhead over the plain layer is two elementwise passes over the weights, not a second matmul.
Gates, weight and bias are one autograd node per layer (:class:`_GatedLayer`, same numbers as the
composite graph): on small CPU layers the bookkeeping of six tiny nodes cost more than the
arithmetic.

Delta-STN (Bae & Grosse, NeurIPS 2020) uses the same structure centred at the current
hyperparameters: the tuner feeds ``h = n(lambda_pert) - stopgrad(n(lambda))`` and ``V`` starts at
zero, so ``W(lambda) = W_0 + Phi (lambda - lambda_0)`` starts equal to the base network and ``W_0``
is the weight at the current hyperparameters. The tuner can linearise the network in the response
(a forward-mode JVP through :attr:`HyperContext.scale`).

Example:
    >>> import torch
    >>> from torch import nn
    >>> plain = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 2))
    >>> net = to_stn(plain, n_hyper=1)
    >>> sorted(net.stn_layers()), sorted(net.dropouts())
    (['net.0', 'net.3'], ['net.2'])
    >>> net.ctx.h = torch.zeros(1)
    >>> net(torch.zeros(3, 4)).shape
    torch.Size([3, 2])
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "HyperContext",
    "StnConv2d",
    "StnDropout",
    "StnEmbedding",
    "StnLayer",
    "StnLinear",
    "StnModel",
    "l2_term",
    "to_stn",
]


def l2_term(w: torch.Tensor, coef: float | torch.Tensor) -> torch.Tensor:
    """``coef/2 * ||w||^2`` with a one-op backward (gradient ``coef * w``).

    Same value and gradient as ``0.5 * coef * (w * w).sum()``, about 4x cheaper on CPU: the
    product with a detached copy makes autograd's backward a single scaled copy of ``w``.
    """
    flat = w.reshape(-1)
    sq = torch.dot(flat, flat.detach())
    return coef * sq - (0.5 * coef) * sq.detach()


class _GatedWeight(torch.autograd.Function):
    """``W = W_e + g * W_h`` whose backward also adds the weight-decay gradient ``coef * W``.

    One autograd node instead of addcmul + an L2 graph: ``dW += coef * W`` then
    ``dW_e = dW``, ``dW_h = g * dW``, ``dg = sum(dW * W_h)`` (reduced to ``g``'s shape).
    Used when the gates come from somewhere else than one matvec of ``h`` (see :class:`_GatedLayer`).
    """

    @staticmethod
    def forward(
        ctx: Any,
        w_e: torch.Tensor,
        w_h: torch.Tensor,
        g: torch.Tensor,
        coef: float,
    ) -> torch.Tensor:
        w = torch.addcmul(w_e, g, w_h)
        ctx.coef = coef
        ctx.save_for_backward(w_h, g, w if coef else None)
        return w

    @staticmethod
    def backward(ctx: Any, dw: torch.Tensor) -> tuple[Any, ...]:
        w_h, g, w = ctx.saved_tensors
        if ctx.coef:
            dw = torch.add(dw, w, alpha=ctx.coef)
        d_wh = dw * g if ctx.needs_input_grad[1] else None
        d_g = (dw * w_h).sum_to_size(g.shape) if ctx.needs_input_grad[2] else None
        return dw, d_wh, d_g, None


class _GatedLayer(torch.autograd.Function):
    """A whole STN layer's effective weight and bias in one autograd node.

    Forward: ``g = V h``, ``W = W_e + g[:n].view(shape) * W_h``, ``b = b_e + g[n:] * b_h``: the
    same operations, in the same order, as the composite path (gates, slices, addcmul), so the
    numbers are identical, but the backward is one Python call instead of about six autograd
    nodes (gate matvec, two slices, a reshape, two addcmul), which on small CPU layers costs more
    than the arithmetic. The backward adds the weight-decay gradient ``coef * W`` to ``dW`` first.
    """

    @staticmethod
    def forward(
        ctx: Any,
        h: torch.Tensor,
        gate: torch.Tensor,
        w_e: torch.Tensor,
        w_h: torch.Tensor,
        b_e: torch.Tensor | None,
        b_h: torch.Tensor | None,
        view: tuple[int, ...],
        coef: float,
    ) -> Any:
        g = F.linear(h, gate)
        n = math.prod(view)
        gw = g[:n].reshape(view)
        w = torch.addcmul(w_e, gw, w_h)
        ctx.coef, ctx.n = coef, n
        biased = b_e is not None and b_h is not None
        ctx.biased = biased
        gb = g[n:] if biased else None
        ctx.save_for_backward(h, gate, w_h, gw, b_h if biased else None, gb, w if coef else None)
        if not biased:
            return w
        assert b_e is not None and b_h is not None and gb is not None
        return w, torch.addcmul(b_e, gb, b_h)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[Any, ...]:
        h, gate, w_h, gw, b_h, gb, w = ctx.saved_tensors
        need = ctx.needs_input_grad
        dw = grads[0]
        if ctx.coef:
            dw = torch.add(dw, w, alpha=ctx.coef)
        d_wh = dw * gw if need[3] else None
        d_be = d_bh = d_h = d_gate = None
        db = grads[1] if ctx.biased else None
        if db is not None:
            d_be = db if need[4] else None
            d_bh = db * gb if need[5] else None
        if need[0] or need[1]:
            d_g = (dw * w_h).sum_to_size(gw.shape).reshape(-1)
            if db is not None:
                d_g = torch.cat([d_g, db * b_h])
            if need[1]:
                d_gate = torch.outer(d_g, h)
            if need[0]:
                d_h = torch.mv(gate.t(), d_g)
        return d_h, d_gate, dw if need[2] else None, d_wh, d_be, d_bh, None, None


def _gated(
    w_e: torch.Tensor, g: torch.Tensor, w_h: torch.Tensor, coef: float, ctx: HyperContext
) -> torch.Tensor:
    if ctx.scale is None and torch.is_grad_enabled():
        return _GatedWeight.apply(w_e, w_h, g, coef)
    return torch.addcmul(w_e, g, w_h)  # forward-mode AD (Delta-STN linearisation) or no grad


def _per_example_gates(ctx: HyperContext, gate: torch.Tensor, ndim: int) -> torch.Tensor:
    """Gates ``(batch, 1, ..., gates)`` for an output with ``ndim`` dims, one row per example."""
    assert ctx.h is not None
    g = F.linear(ctx.h, gate)
    if ctx.scale is not None:
        g = g * ctx.scale
    return g.reshape((g.shape[0],) + (1,) * (ndim - 2) + (g.shape[1],))


class HyperContext:
    """State shared by the STN layers of one model during a step.

    Attributes:
        h: hypernetwork input (``n_hyper``,), or ``(batch, n_hyper)`` for one perturbation per
            example (the gated term is then a second matmul instead of being folded into the
            weights), or ``None`` for the plain elementwise network.
        scale: optional scalar multiplying every gate (the tuner makes it a dual number to
            linearise the output in the response, Delta-STN).
        rates: dropout rate per :class:`StnDropout` path, for this step.
    """

    def __init__(self, n_hyper: int) -> None:
        self.n_hyper = n_hyper
        self.h: torch.Tensor | None = None
        self.scale: torch.Tensor | None = None
        self.rates: dict[str, float | torch.Tensor] = {}

    def gates(self, gate: torch.Tensor) -> torch.Tensor | None:
        if self.h is None:
            return None
        g = F.linear(self.h, gate)
        return g if self.scale is None else g * self.scale


class StnLayer(nn.Module):
    """Base class: elementwise ``weight``/``bias``, response ``hweight``/``hbias``, gates ``gate``."""

    weight: nn.Parameter
    bias: nn.Parameter | None
    hweight: nn.Parameter
    hbias: nn.Parameter | None
    gate: nn.Parameter

    def __init__(self, ctx: HyperContext) -> None:
        super().__init__()
        # a plain attribute, not a submodule: many layers share one context
        object.__setattr__(self, "ctx", ctx)

    ctx: HyperContext
    #: weight-decay coefficient whose gradient ``l2_coef * W`` the backward adds (set per step by
    #: the tuner; 0 outside training steps). Equivalent to ``+ l2_coef/2 ||W(h)||^2`` in the loss.
    l2_coef: float = 0.0

    def _make_response(self, n_gates: int, delta: bool, gate_std: float) -> None:
        self.hweight = nn.Parameter(torch.empty_like(self.weight))
        fan_in = self.weight[0].numel()
        bound = 1.0 / math.sqrt(max(fan_in, 1))
        nn.init.uniform_(self.hweight, -bound, bound)
        self.hbias = None
        if self.bias is not None:
            self.hbias = nn.Parameter(torch.empty_like(self.bias).uniform_(-bound, bound))
        self.gate = nn.Parameter(torch.zeros(n_gates, self.ctx.n_hyper))
        if not delta:
            nn.init.normal_(self.gate, std=gate_std)

    def _fused(self) -> bool:
        """Whether the one-node path (:class:`_GatedLayer`) applies: one draw per minibatch,
        gradients recorded, no dual-number scale (forward-mode AD takes the composite path)."""
        h = self.ctx.h
        return h is not None and h.dim() == 1 and self.ctx.scale is None and torch.is_grad_enabled()

    def effective(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The weight and bias used for the current :attr:`HyperContext.h`."""
        if self._fused():
            out = self.weight.shape[0]
            view = (out,) + (1,) * (self.weight.dim() - 1)
            ctx, biased = self.ctx, self.bias is not None and self.hbias is not None
            b_e, b_h = (self.bias, self.hbias) if biased else (None, None)
            out_wb = _GatedLayer.apply(
                ctx.h, self.gate, self.weight, self.hweight, b_e, b_h, view, self.l2_coef
            )
            return (out_wb[0], out_wb[1]) if biased else (out_wb, self.bias)
        g = self.ctx.gates(self.gate)
        if g is None:
            return self.weight, self.bias
        out = self.weight.shape[0]
        gw = g[:out].reshape((-1,) + (1,) * (self.weight.dim() - 1))
        w = _gated(self.weight, gw, self.hweight, self.l2_coef, self.ctx)
        b: torch.Tensor | None = self.bias
        if b is not None and self.hbias is not None:
            b = torch.addcmul(b, g[out:], self.hbias)
        return w, b

    def l2(self, coef: float | torch.Tensor = 1.0) -> torch.Tensor:
        """``coef/2 * ||W(h)||^2`` of the effective weight (the weight-decay term; biases excluded).

        Reuses the weight of the last forward when the context has not changed since.
        """
        cached = self._last
        if cached is not None and cached[0] is self.ctx.h and cached[1] is self.ctx.scale:
            w = cached[2]
        else:
            w, _ = self.effective()
        return l2_term(w, coef)

    _last: tuple[Any, Any, torch.Tensor] | None = None

    def _remember(self, w: torch.Tensor) -> None:
        object.__setattr__(self, "_last", (self.ctx.h, self.ctx.scale, w) if self.training else None)


class StnLinear(StnLayer):
    """``nn.Linear`` whose weights respond to the hyperparameters (see the module docstring)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        ctx: HyperContext,
        bias: bool = True,
        *,
        delta: bool = False,
        gate_std: float = 0.01,
    ) -> None:
        super().__init__(ctx)
        plain = nn.Linear(in_features, out_features, bias=bias)
        self.in_features, self.out_features = in_features, out_features
        self.weight = plain.weight  # type: ignore[assignment]
        self.bias = plain.bias
        self._make_response(2 * out_features if bias else out_features, delta, gate_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.ctx.h is not None and self.ctx.h.dim() == 2:  # one perturbation per example
            g = _per_example_gates(self.ctx, self.gate, x.dim())
            out = self.out_features
            y = F.linear(x, self.weight, self.bias) + g[..., :out] * F.linear(x, self.hweight)
            return y if self.hbias is None else y + g[..., out:] * self.hbias
        w, b = self.effective()
        self._remember(w)
        return F.linear(x, w, b)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, n_hyper={self.ctx.n_hyper}"
        )


class StnConv2d(StnLayer):
    """``nn.Conv2d`` with per-output-channel gates (same stride, padding, dilation, groups)."""

    def __init__(
        self, conv: nn.Conv2d, ctx: HyperContext, *, delta: bool = False, gate_std: float = 0.01
    ) -> None:
        super().__init__(ctx)
        if conv.padding_mode != "zeros":
            raise ValueError(f"StnConv2d supports padding_mode='zeros' only, got {conv.padding_mode!r}")
        self.stride, self.padding, self.dilation, self.groups = (
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
        )
        self.weight = nn.Parameter(conv.weight.detach().clone())
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone())
        out = conv.out_channels
        self._make_response(2 * out if conv.bias is not None else out, delta, gate_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.ctx.h is not None and self.ctx.h.dim() == 2:  # one perturbation per example
            g = F.linear(self.ctx.h, self.gate)[:, :, None, None]
            out = self.weight.shape[0]
            y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
            r = F.conv2d(x, self.hweight, None, self.stride, self.padding, self.dilation, self.groups)
            y = y + g[:, :out] * r
            return y if self.hbias is None else y + g[:, out:] * self.hbias[:, None, None]
        w, b = self.effective()
        self._remember(w)
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)


class StnEmbedding(StnLayer):
    """``nn.Embedding`` with per-dimension gates: ``E(h) = E_e + E_h · diag(g)``."""

    def __init__(
        self, emb: nn.Embedding, ctx: HyperContext, *, delta: bool = False, gate_std: float = 0.01
    ) -> None:
        super().__init__(ctx)
        self.padding_idx = emb.padding_idx
        self.weight = nn.Parameter(emb.weight.detach().clone())
        self.bias = None
        self.hweight = nn.Parameter(torch.randn_like(self.weight) * float(self.weight.detach().std()))
        self.hbias = None
        self.gate = nn.Parameter(torch.zeros(emb.embedding_dim, ctx.n_hyper))
        if not delta:
            nn.init.normal_(self.gate, std=gate_std)

    def effective(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self._fused():
            view = (self.weight.shape[1],)
            w = _GatedLayer.apply(
                self.ctx.h, self.gate, self.weight, self.hweight, None, None, view, self.l2_coef
            )
            return w, None
        g = self.ctx.gates(self.gate)
        if g is None:
            return self.weight, None
        return _gated(self.weight, g, self.hweight, self.l2_coef, self.ctx), None

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if self.ctx.h is not None and self.ctx.h.dim() == 2:  # one perturbation per example
            g = _per_example_gates(self.ctx, self.gate, idx.dim() + 1)
            e = F.embedding(idx, self.weight, self.padding_idx)
            return e + g * F.embedding(idx, self.hweight, self.padding_idx)
        w, _ = self.effective()
        self._remember(w)
        return F.embedding(idx, w, self.padding_idx)


class StnDropout(nn.Module):
    """Dropout whose rate the tuner sets per step (falls back to the original rate ``p``)."""

    def __init__(self, p: float, path: str, ctx: HyperContext) -> None:
        super().__init__()
        self.p, self.path = p, path
        object.__setattr__(self, "ctx", ctx)

    ctx: HyperContext

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        rate = self.ctx.rates.get(self.path, self.p)
        if isinstance(rate, torch.Tensor):  # one rate per example
            p = rate.reshape((-1,) + (1,) * (x.dim() - 1))
            return x * (torch.rand_like(x) >= p) / (1.0 - p)
        return F.dropout(x, rate, True)

    def extra_repr(self) -> str:
        return f"p={self.p}, path={self.path!r}"


class StnModel(nn.Module):
    """A plain model whose Linear/Conv2d/Embedding/Dropout layers were made hyperparameter-aware.

    ``forward`` is the wrapped model's; set ``model.ctx.h`` (and ``ctx.rates``) before calling it.
    """

    def __init__(self, net: nn.Module, ctx: HyperContext, delta: bool) -> None:
        super().__init__()
        self.net = net
        self.delta = delta
        object.__setattr__(self, "ctx", ctx)

    ctx: HyperContext

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.net(*args, **kwargs)

    def stn_layers(self) -> dict[str, StnLayer]:
        """Hyperparameter-conditioned layers by module path (``net.<path in the plain model>``)."""
        return {n: m for n, m in self.named_modules() if isinstance(m, StnLayer)}

    def dropouts(self) -> dict[str, StnDropout]:
        return {n: m for n, m in self.named_modules() if isinstance(m, StnDropout)}

    def response_parameters(self) -> list[nn.Parameter]:
        """``hweight``, ``hbias`` and ``gate`` of every layer (Phi in Delta-STN)."""
        out: list[nn.Parameter] = []
        for layer in self.stn_layers().values():
            out += [p for p in (layer.hweight, layer.hbias, layer.gate) if p is not None]
        return out

    def base_parameters(self) -> list[nn.Parameter]:
        """Every parameter that is not a response parameter (W_0 in Delta-STN)."""
        resp = {id(p) for p in self.response_parameters()}
        return [p for p in self.parameters() if id(p) not in resp]

    def export_plain(self, plain: nn.Module, h: torch.Tensor | None = None) -> nn.Module:
        """Load the effective weights at hypernetwork input ``h`` into a copy of ``plain``."""
        old = self.ctx.h
        self.ctx.h = h
        try:
            layers = self.stn_layers()
            state: dict[str, torch.Tensor] = {}
            with torch.no_grad():
                for key, value in self.state_dict().items():
                    if key.rsplit(".", 1)[0] not in layers:
                        state[key.removeprefix("net.")] = value.clone()
                for path, layer in layers.items():
                    prefix = "" if path == "net" else path.removeprefix("net.") + "."
                    w, b = layer.effective()
                    state[prefix + "weight"] = w.detach().clone()
                    if b is not None:
                        state[prefix + "bias"] = b.detach().clone()
            out = copy.deepcopy(plain)
            out.load_state_dict(state)
            return out
        finally:
            self.ctx.h = old


def to_stn(
    model: nn.Module, n_hyper: int, *, delta: bool = False, gate_std: float = 0.01, skip: tuple[str, ...] = ()
) -> StnModel:
    """Copy ``model`` and turn its Linear/Conv2d/Embedding layers into STN layers.

    The elementwise weights are copies of the plain ones; ``nn.Dropout`` becomes
    :class:`StnDropout` (rate set by the tuner per step). Module paths in ``skip`` (and their
    children) stay plain. With ``delta=True`` the gates start at zero (Delta-STN).
    """
    if n_hyper < 1:
        raise ValueError(f"n_hyper must be >= 1, got {n_hyper}")
    net = copy.deepcopy(model)
    ctx = HyperContext(n_hyper)

    def replacement(child: nn.Module, path: str) -> nn.Module | None:
        new: nn.Module | None = None
        if type(child) is nn.Linear:
            new = StnLinear(
                child.in_features,
                child.out_features,
                ctx,
                child.bias is not None,
                delta=delta,
                gate_std=gate_std,
            )
            with torch.no_grad():
                new.weight.copy_(child.weight)
                if child.bias is not None:
                    new.bias.copy_(child.bias)  # type: ignore[union-attr]
        elif type(child) is nn.Conv2d:
            new = StnConv2d(child, ctx, delta=delta, gate_std=gate_std)
        elif type(child) is nn.Embedding:
            new = StnEmbedding(child, ctx, delta=delta, gate_std=gate_std)
        elif isinstance(child, nn.Dropout):
            new = StnDropout(float(child.p), f"net.{path}" if path else "net", ctx)
        if new is not None:
            params = list(child.parameters())
            new.to(params[0].device if params else torch.device("cpu"))
            # keep the user's hooks (e.g. a muP output multiplier registered on the readout)
            for attr in (
                "_forward_hooks",
                "_forward_pre_hooks",
                "_forward_hooks_with_kwargs",
                "_forward_hooks_always_called",
                "_forward_pre_hooks_with_kwargs",
            ):
                if getattr(child, attr, None):
                    setattr(new, attr, getattr(child, attr))
        return new

    def convert(parent: nn.Module, prefix: str) -> None:
        for name, child in list(parent.named_children()):
            path = f"{prefix}{name}"
            if path in skip:
                continue
            new = replacement(child, path)
            if new is not None:
                setattr(parent, name, new)
            else:
                convert(child, f"{path}.")

    root = replacement(net, "")
    if root is not None:  # the model is a single layer
        net = root
    else:
        convert(net, "")
    stn = StnModel(net, ctx, delta)
    if not stn.stn_layers():
        raise ValueError(
            "the model has no nn.Linear, nn.Conv2d or nn.Embedding layer to make hyperparameter-aware"
        )
    return stn
