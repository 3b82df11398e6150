"""Frame-pipeline and pipeline-training traffic, against counts made by hand and by running the layers."""

from __future__ import annotations

import copy

import _parallel_models as M
import pytest
import torch

from parallel.cost.profile import profile_model
from parallel.cost.traffic import (
    carry_bytes,
    float_carry_bytes,
    frame_pipeline_traffic,
    pipeline_training_traffic,
)
from pipelines.families.sd.training import unet_layers


def test_frame_pipeline_sends_one_block_of_hidden_states_per_stage_and_tick():
    prof = profile_model("wan2.1-1.3b", 480, 832, frames=81, batch=2)
    stages, block = 4, 3  # 21 latent frames in blocks of 3
    t = frame_pipeline_traffic(prof, stages, block_latent_frames=block)
    tokens_per_frame = (480 // 16) * (832 // 16)
    hidden = 2 * block * tokens_per_frame * 1536 * 2  # batch x tokens x width x bf16
    noise = 2 * 16 * block * (480 // 8) * (832 // 8) * 2  # the block's latent-sized prediction
    assert t.total_bytes * stages == pytest.approx(3 * hidden + noise)
    assert set(t.overlapped) == {"activations", "noise"}
    assert frame_pipeline_traffic(prof, 1).total_bytes == 0


def test_pipeline_training_carry_bytes_on_meta_match_a_real_run():
    unet = M.tiny_unet(2)
    layers = unet_layers(unet)
    latent, t, text = torch.randn(2, 4, 16, 16), torch.tensor([10, 20]), M.text_embeddings(2)
    real = carry_bytes(layers, (latent, t, text))
    meta_layers = unet_layers(copy.deepcopy(unet).to("meta"))
    on_meta = carry_bytes(meta_layers, (latent.to("meta"), t.to("meta"), text.to("meta")))
    assert on_meta == real
    # after conv_in the carry holds the sample twice (as input and as the first skip), the time embedding
    # and the text embeddings
    sample = 2 * 32 * 16 * 16 * 4
    temb = 2 * unet.time_embedding.linear_2.out_features * 4
    assert real[0] == 2 * sample + temb + text.numel() * 4
    grads = float_carry_bytes(layers, (latent, t, text))
    assert all(g <= c for g, c in zip(grads, real))


def test_pipeline_training_traffic_counts_both_directions_per_micro_batch():
    t = pipeline_training_traffic([1000.0, 600.0], [900.0, 600.0], micro_batches=4)
    assert t.degree == 3
    assert t.bytes_per_step["activations"] * 3 == 4 * 1600
    assert t.bytes_per_step["gradients"] * 3 == 4 * 1500
