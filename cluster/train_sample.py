"""A grid of renders of a trained model through the render path's own loop (pipelines.sampling), one process.

    python -m cluster.train_sample --size 512 --thumb 192 --out docs/builtin-image-samples-512.png

Used to eyeball a training run and to make the README's sample image; `tessera render` is the real service.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

DEFAULT_PROMPTS = (
    "a red circle on a blue background",
    "red and white vertical stripes",
    "a black and yellow checkerboard",
    "a green square on a pink background",
    "blue blobs on a yellow background",
    "an orange to purple gradient",
)


def render_grid(
    model: str, prompts: tuple[str, ...], size: int, steps: int, guidance: float, seed: int, thumb: int
) -> Image.Image:
    """One row of renders (each `size` px, shown at `thumb` px) of `prompts`."""
    from pipelines.builtin import resolve_model
    from pipelines.loading import load_pipeline
    from pipelines.sampling import DenoiseLoop, batched_cfg_predictor, decode_latents, encode_conditioning

    pipe = load_pipeline(resolve_model(model))
    tiles = []
    for prompt in prompts:
        cond = encode_conditioning(pipe, prompt, "", guidance, pipe.unet.device)
        loop = DenoiseLoop(pipe, "ddim", steps, seed, size, size, batched_cfg_predictor(pipe.unet, cond))
        while not loop.done:
            loop.step()
        image = (decode_latents(pipe, loop.latents) * 255).round().astype(np.uint8)
        tiles.append(np.asarray(Image.fromarray(image).resize((thumb, thumb), Image.LANCZOS)))
    return Image.fromarray(np.concatenate(tiles, axis=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="builtin-image")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--thumb", type=int, default=160)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("docs/builtin-image-samples-512.png"))
    parser.add_argument("prompts", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    grid = render_grid(
        args.model,
        tuple(args.prompts) or DEFAULT_PROMPTS,
        args.size,
        args.steps,
        args.guidance,
        args.seed,
        args.thumb,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
