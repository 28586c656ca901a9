"""Which part of a network a weight matrix belongs to: attention, MLP, readout or other.

Pure Python (no torch). The per-class weight-decay calibration fits one width exponent per
component (the keys of ``ProxyConfig.wd_exponents``: ``attention``, ``mlp``, ``output``); the
component is read from the parameter's name and its width class (from
:func:`~hptransfer.diagnostics.report.layer_class`):

* ``output``: the readout, i.e. a matrix whose fan-in grows with width and fan-out does not
  (``lm_head``, a classifier head).
* ``attention`` / ``mlp``: a hidden matrix (both dims grow) under an attention or MLP module,
  by the *innermost* module name that says which (so GPT-2's ``attn.c_proj`` is attention and
  ``mlp.c_proj`` MLP; T5's ``DenseReluDense.wo`` is MLP while Meta LLaMA's ``attention.wo``
  is attention). Module names, case-insensitive: attention: ``attn``, ``attention``,
  ``self_attn``, ``self_attention``, ``selfattention``, ``cross_attn``, ``crossattention``,
  ``encdecattention``, ``mha``; MLP: ``mlp``, ``ffn``, ``ff``, ``feed_forward``,
  ``feedforward``, ``densereludense``, ``intermediate``, ``experts``, ``block_sparse_moe``,
  ``moe``. Without such a module, unambiguous leaf names decide: ``q``, ``k``, ``v``,
  ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``, ``qkv``, ``c_attn``, ``query``, ``key``,
  ``value``, ``query_key_value``, ``wq``, ``wk``, ``wv``, ``wqkv`` (attention); ``fc1``,
  ``fc2``, ``c_fc``, ``up_proj``, ``gate_proj``, ``down_proj``, ``w1``, ``w2``, ``w3``,
  ``gate``, ``up``, ``down``, ``dense_h_to_4h``, ``dense_4h_to_h``, ``wi``, ``wi_0``,
  ``wi_1`` (MLP).
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

_ATTENTION_MODULES = frozenset(
    {
        "attn",
        "attention",
        "self_attn",
        "self_attention",
        "selfattention",
        "cross_attn",
        "crossattention",
        "encdecattention",
        "mha",
    }
)
_MLP_MODULES = frozenset(
    {
        "mlp",
        "ffn",
        "ff",
        "feed_forward",
        "feedforward",
        "densereludense",
        "intermediate",
        "experts",
        "block_sparse_moe",
        "moe",
    }
)
_ATTENTION_LEAVES = frozenset(
    {
        "q",
        "k",
        "v",
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "qkv",
        "c_attn",
        "query",
        "key",
        "value",
        "query_key_value",
        "wq",
        "wk",
        "wv",
        "wqkv",
    }
)
_MLP_LEAVES = frozenset(
    {
        "fc1",
        "fc2",
        "c_fc",
        "up_proj",
        "gate_proj",
        "down_proj",
        "w1",
        "w2",
        "w3",
        "gate",
        "up",
        "down",
        "dense_h_to_4h",
        "dense_4h_to_h",
        "wi",
        "wi_0",
        "wi_1",
    }
)


def component(name: str, param_class: str) -> str:
    """``attention``, ``mlp``, ``output`` or ``other`` for a matrix named ``name`` of width
    class ``param_class`` (``hidden``, ``output``, ``input``, ``fixed``); see the module
    docstring for the names recognised."""
    if param_class == "output":
        return "output"
    if param_class != "hidden":
        return "other"
    parts = [p.lower() for p in name.split(".")]
    modules = parts[:-1] if len(parts) > 1 else parts  # drop the parameter's own name (weight)
    for part in reversed(modules):  # the innermost module that says what it is decides
        if part in _ATTENTION_MODULES:
            return "attention"
        if part in _MLP_MODULES:
            return "mlp"
    leaf = modules[-1]
    if leaf in _ATTENTION_LEAVES:
        return "attention"
    if leaf in _MLP_LEAVES:
        return "mlp"
    return "other"
