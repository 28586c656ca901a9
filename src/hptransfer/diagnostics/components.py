"""Which part of a network a weight matrix belongs to: attention, MLP, readout or other.

The per-class weight-decay calibration fits one width exponent per component (the keys of
``ProxyConfig.wd_exponents``: ``attention``, ``mlp``, ``output``); the component is read from the
parameter's name and its width class (from :func:`~hptransfer.diagnostics.report.layer_class`).
Attention and MLP are told apart by
:func:`hptransfer.scaling.torch_adapter.hidden_kind`, the function that gives each hidden
matrix its optimizer group, so a calibrated exponent lands on the same matrices it was measured
on:

* ``output``: the readout, i.e. a matrix whose fan-in grows with width and fan-out does not
  (``lm_head``, a classifier head).
* ``attention`` / ``mlp``: a hidden matrix (both dims grow) under an attention or MLP module,
  by the *innermost* module name that says which (so GPT-2's ``attn.c_proj`` is attention and
  ``mlp.c_proj`` MLP; T5's ``DenseReluDense.wo`` is MLP while Meta LLaMA's ``attention.wo`` is
  attention), else by an unambiguous leaf name (``q_proj``, ``c_attn``, ``fc1``, ``up_proj``,
  ``w1``…); the word lists are :func:`~hptransfer.scaling.torch_adapter.hidden_kind`'s.
* ``other``: any other hidden matrix (e.g. BERT/ViT's ``layer.0.output.dense``, whose module
  name does not say it is the MLP's second matrix), and input / fixed matrices.

Example:
    >>> component("blocks.0.attn.q.weight", "hidden")
    'attention'
    >>> component("transformer.h.0.mlp.c_proj.weight", "hidden")
    'mlp'
    >>> component("model.layers.3.self_attn.o_proj.weight", "hidden"), component("lm_head.weight", "output")
    ('attention', 'output')
"""

from __future__ import annotations

__all__ = ["COMPONENTS", "component"]

#: The components that get their own weight-decay exponent (``ProxyConfig.wd_exponents`` keys).
COMPONENTS = ("attention", "mlp", "output")


def component(name: str, param_class: str) -> str:
    """``attention``, ``mlp``, ``output`` or ``other`` for a matrix named ``name`` of width
    class ``param_class`` (``hidden``, ``output``, ``input``, ``fixed``); see the module
    docstring for the names recognised."""
    if param_class == "output":
        return "output"
    if param_class != "hidden":
        return "other"
    from hptransfer.scaling.torch_adapter import hidden_kind  # imports torch, like the diagnostics

    return hidden_kind(name) or "other"
