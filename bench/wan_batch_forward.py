"""A Wan-2.1-1.3B-shaped transformer (random weights, bfloat16) on one GPU: a frame block's forward at batch 1 and 2.

    python -m bench.wan_batch_forward

Whether a guidance branch per worker (``parallel=frames parallel.cfg=true``) halves a worker's compute: it does where
the batch-2 forward takes twice the batch-1 one. Blocks of 2 and 5 latent frames (8 and 17 video frames) at 480x832,
a 512-token prompt; medians of 10 forwards after 3. Prints the figures; writes nothing. Needs CUDA.
"""

from __future__ import annotations

import json
import time

import torch

BLOCKS = ((2, 60, 104), (5, 60, 104))
"""(latent frames, latent rows, latent columns) of a frame block at 480x832."""


def wan_1_3b_shape():
    """Wan 2.1 1.3B's transformer layout, random weights, bfloat16 on the GPU."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
        text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True, eps=1e-6,
        rope_max_seq_len=1024,
    )
    return model.to("cuda", torch.bfloat16).eval()


@torch.no_grad()
def forward_ms(model, frames: int, rows: int, columns: int, batch: int) -> float:
    """Median milliseconds of one forward of a block at ``batch``."""
    x = torch.randn(batch, 16, frames, rows, columns, device="cuda", dtype=torch.bfloat16)
    t = torch.full((batch,), 500.0, device="cuda")
    text = torch.randn(batch, 512, 4096, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        model(x, t, text, return_dict=False)
    torch.cuda.synchronize()
    times = []
    for _ in range(10):
        started = time.perf_counter()
        model(x, t, text, return_dict=False)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2] * 1e3


def main() -> None:
    model = wan_1_3b_shape()
    rows = {}
    for frames, height, width in BLOCKS:
        for batch in (1, 2):
            rows[f"{frames} latent frames, batch {batch}"] = forward_ms(model, frames, height, width, batch)
            print(frames, batch, f"{rows[f'{frames} latent frames, batch {batch}']:.1f} ms (median of 10)", flush=True)
    print(json.dumps(rows))
    print(torch.__version__, torch.cuda.get_device_name())


if __name__ == "__main__":
    main()
