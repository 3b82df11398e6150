"""LTX-Video's block-wise decode against decoding the whole video: how much latent context each side closes the seam.

    .venv/bin/python -m bench.ltx_decode_seam

LTX's VAE decoder is not causal: each of its time convolutions pads with edge frames on both sides, so a frame
near a block border depends on latent frames of the next block, which the frame pipeline has not finished when it
decodes the block (``pipelines/families/ltx/decode.py``: each block decodes with one latent frame of the block
before in front, nothing after). This measures, for two decoder layouts with random weights (the test fixture's
tiny one, one layer per block; diffusers' default ``AutoencoderKLLTXVideo`` layout, LTX-Video 0.9.0's depth with 8
channels per block), the PSNR of the block-wise video against the whole decode and the decode's CPU seconds, by
the latent frames of context decoded in front of each block (left) and after it (right), the context's frames
dropped again; then Tessera's own block decoder (``LTXBlockDecoder``, fed the blocks in order as the frame
pipeline feeds it) at ``decode_context`` 0 (left 1, right 0: what Tessera decoded before it held blocks back), 8
(the default) and 16. Random weights say what the receptive field allows, not what a trained decoder's frames
look like. Writes the "ltx-decode-seam" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

from bench.common import provenance, write_section
from pipelines.families.ltx import LTXFamily

LATENT_FRAMES = 24
CONTEXTS = ((1, 0), (4, 0), (1, 1), (1, 2), (1, 4), (4, 4), (8, 8), (16, 16))
TESSERA_CONTEXTS = (0, 8, 16)


def tiny_fixture_vae() -> torch.nn.Module:
    tests = Path(__file__).resolve().parents[1] / "tests" / "video"
    if str(tests) not in sys.path:
        sys.path.insert(0, str(tests))
    import tempfile

    from _tiny_ltx import save_tiny_ltx

    from pipelines.families.ltx.loading import load_ltx_pipeline

    return load_ltx_pipeline(save_tiny_ltx(Path(tempfile.mkdtemp()) / "ltx")).vae


def default_layout_vae() -> torch.nn.Module:
    from diffusers import AutoencoderKLLTXVideo

    torch.manual_seed(0)
    return AutoencoderKLLTXVideo(
        latent_channels=8, block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8)
    ).eval()


def window(vae, latent: torch.Tensor, lo: int, hi: int, left: int, right: int) -> torch.Tensor:
    """Latent frames [lo, hi) decoded with up to ``left``/``right`` latent frames around them, cropped back to
    their own frames (the first latent frame of a decode gives one frame, each later one the temporal factor)."""
    start, stop = max(0, lo - left), min(latent.shape[2], hi + right)
    factor = vae.temporal_compression_ratio
    video = vae.decode(latent[:, :, start:stop], torch.tensor([0.0]), return_dict=False)[0].clamp(-1, 1)

    def first(j: int) -> int:
        return 0 if j == start else 1 + factor * (j - start - 1)

    return video[:, :, first(lo) : first(hi)]


@torch.no_grad()
def measure(vae, block: int) -> list[tuple[str, float, int, float]]:
    """(context, PSNR dB, frames differing from the whole decode, decode CPU s) per context."""
    latent = torch.randn(
        1, vae.config.latent_channels, LATENT_FRAMES, 2, 2, generator=torch.Generator().manual_seed(0)
    )
    started = time.thread_time()
    whole = vae.decode(latent, torch.tensor([0.0]), return_dict=False)[0].clamp(-1, 1)
    whole_s = time.thread_time() - started
    rows = [("whole video at once", math.inf, 0, whole_s)]
    for left, right in CONTEXTS:
        started = time.thread_time()
        parts = [window(vae, latent, lo, lo + block, left, right) for lo in range(0, LATENT_FRAMES, block)]
        seconds = time.thread_time() - started
        rows.append((f"left {left}, right {right}", *_compare(torch.cat(parts, dim=2), whole), seconds))
    return rows + tessera_rows(vae, latent, block)


def _compare(video: torch.Tensor, whole: torch.Tensor) -> tuple[float, int]:
    """(PSNR dB over every frame, frames differing at all)."""
    error = (video - whole).pow(2).mean(dim=(0, 1, 3, 4))
    psnr = 10 * math.log10(4 / error.mean().item()) if error.max() > 0 else math.inf
    return psnr, int((error > 1e-10).sum())


def tessera_rows(vae, latent: torch.Tensor, block: int) -> list[tuple[str, float, int, float]]:
    """Tessera's block decoder by ``decode_context``: the latents are normalised as the pipeline leaves them, so
    the whole decode compared with is of the denormalised latent, as ``LTXPipeline`` decodes it."""
    from diffusers import LTXPipeline

    from pipelines.families.ltx.decode import LTXBlockDecoder

    normalised = LTXPipeline._normalize_latents(latent, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
    whole = vae.decode(latent, torch.tensor([0.0]), return_dict=False)[0].clamp(-1, 1)
    rows = []
    for context in TESSERA_CONTEXTS:
        decoder = LTXBlockDecoder(vae, context=context, video_latent_frames=LATENT_FRAMES)
        started = time.thread_time()
        parts = [decoder.decode(normalised[:, :, lo : lo + block]) for lo in range(0, LATENT_FRAMES, block)]
        seconds = time.thread_time() - started
        default = " (the default)" if context == LTXFamily.decode_context else ""
        rows.append((f"Tessera, decode_context={context}{default}", *_compare(torch.cat(parts, 2), whole), seconds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", default="4,6", help="latent frames per block")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    layouts = {
        "the test fixture's tiny decoder (1 layer per block)": tiny_fixture_vae(),
        "diffusers' default layout (LTX-Video 0.9.0's depth, 8 channels)": default_layout_vae(),
    }
    tables = []
    for name, vae in layouts.items():
        for block in (int(b) for b in args.blocks.split(",")):
            rows = measure(vae, block)
            frames = 1 + vae.temporal_compression_ratio * (LATENT_FRAMES - 1)
            lines = [f"### {name}, blocks of {block} latent frames ({frames} frames)", ""]
            lines += [
                "| context (latent frames) | PSNR vs whole (dB) | frames differing | decode CPU s |",
                "|---|---|---|---|",
            ]
            for label, psnr, differing, seconds in rows:
                lines.append(f"| {label} | {psnr:.1f} | {differing} | {seconds:.3f} |")
            tables.append("\n".join(lines))
            print(tables[-1], flush=True)
    body = f"""## LTX-Video's block-wise decode: the seam by latent context

{LATENT_FRAMES} random latent frames (2x2 latent pixels) decoded whole and block by block with the given context
on each side (its frames dropped again); PSNR of the block-wise video against the whole decode over every frame,
the frames that differ at all, and the decode's thread CPU seconds (one torch thread). Random weights: what the
decoder's receptive field allows, not a trained decoder's look. The last rows are Tessera's block decoder fed the
blocks in order (`decode_context`: latent frames each way, the frames after a block waited for; 0 is left 1,
right 0, what Tessera decoded before). Over 24 latent frames a long context holds most blocks back to the last
call, which then decodes them in one window: `decode_context=16`'s seconds are near the whole decode's here, not
what a long video's blocks cost (each of those decodes its block and up to twice the context).

{provenance("python -m bench.ltx_decode_seam")}
""" + "\n\n".join(tables)
    if not args.no_write:
        write_section("ltx-decode-seam", body)


if __name__ == "__main__":
    main()
