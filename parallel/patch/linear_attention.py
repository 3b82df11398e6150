"""Linear attention on a band of tokens: the bands sum a small per-head state, they never exchange K/V.

Kernel linear attention (Sana's ReLU attention, LinFusion's for UNets) computes, for every query token
``i`` over every key/value token ``j``::

    out_i = (sum_j v_j k_j^T) q_i / ((sum_j k_j)^T q_i + eps)

with ``q`` and ``k`` already through the feature map (ReLU). Both sums run over all tokens of the image, and
a sum over the tokens is the sum over the bands of each band's own partial sum. So each band computes its
state ``[sum_j v_j k_j^T ; sum_j k_j^T]`` (per sample and head: ``(Dv + 1) x Dk``) from its own tokens, the
bands all-reduce it, and every band applies the full image's state to its own queries. That is exact (up to
the order of the float sums), and the bytes a band sends per layer are that state's, whatever the
resolution: softmax attention's K/V gather grows with the image, this does not.

Displaced mode (DistriFusion): the all-reduce of this step's states is left in flight and used in the next
step, corrected with this band's fresh state: ``total_stale - own_stale + own_fresh``. Only the other bands'
part is a step old, as with GroupNorm's sums (``norm``) and the K/V of softmax attention, whose own band is
always fresh; the transfer overlaps the step's compute. The state travels in its own precision (float32 for
Sana, which computes it in float32) even with ``PatchConfig.stale_dtype``: it is a sum over every token,
which half precision could overflow, and it is too small for halving it to matter.

Traffic is counted under its own kind, ``"linear"``. The layout follows diffusers'
``SanaLinearAttnProcessor2_0`` (queries and values with channels before tokens), so a band processor that
mirrors it computes the same products in the same order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from parallel.patch.runtime import PatchRuntime

KIND = "linear"
"""The traffic kind the states' all-reduce is counted under (``parallel.comm``)."""


def linear_attention_state(key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """One band's state, ``(B, H, Dv + 1, Dk)``: ``sum_j v_j k_j^T`` over its tokens, with ``sum_j k_j^T`` as
    the last row (the normaliser). ``key``: ``(B, H, N, Dk)``; ``value``: ``(B, H, Dv, N)``."""
    value = F.pad(value, (0, 0, 0, 1), mode="constant", value=1.0)
    return torch.matmul(value, key)


def all_bands_state(rt: PatchRuntime, key: tuple, local: torch.Tensor) -> torch.Tensor:
    """The sum of ``local`` over every band of the runtime's group: fresh in synchronous steps; in displaced
    ones the other bands' from the previous step plus this band's fresh one. ``key``: ``("linear", layer id)``."""
    if rt.world == 1:
        return local
    sync = rt.sync_now
    total = rt.exchange(key, lambda: rt.comm.all_reduce_sum(local, KIND))
    if not sync:
        total = total - rt.recall(key) + local
    if rt.config.mode == "displaced":
        rt.remember(key, local)
    return total


def band_linear_attention(
    rt: PatchRuntime,
    key_id: tuple,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    eps: float = 1e-15,
) -> torch.Tensor:
    """Linear attention of this band's queries over every band's keys and values, ``(B, H, Dv, N_band)``.

    ``query``: ``(B, H, Dk, N_band)``, ``key``: ``(B, H, N_band, Dk)``, ``value``: ``(B, H, Dv, N_band)``, all
    after the feature map; ``key_id`` names the layer's exchange (``("linear", rt.new_layer_id())``).
    """
    state = all_bands_state(rt, key_id, linear_attention_state(key, value))
    out = torch.matmul(state, query)
    return out[:, :, :-1] / (out[:, :, -1:] + eps)
