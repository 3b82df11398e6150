"""Every model family on one GPU in bfloat16: Tessera's worker code against the diffusers pipeline called directly.

    python -m bench.cuda_families --out DIR                 # on the lent GPU machine
    python -m bench.cuda_families --out DIR --device cpu    # a dry run here

Each family's tiny pipeline is built offline by the test fixtures' builders (diffusers' and transformers' own
classes, local tokenizers, ``save_pretrained``; imported from ``tests/``, not copied), loaded in bfloat16 on the
device, and rendered as a worker renders it, beside the same pipeline class loaded in bfloat16 on the same device
and called directly:

1. image families (SDXL, Flux with true CFG, SD3.5, Qwen-Image with true CFG, Sana, PixArt-alpha): a
   ``RenderSession`` to the end, decoded by the family, against the pipeline's image from the same seed: the
   largest and mean difference in 8-bit levels. On CPU the suite holds these within 1e-5 in float32.
2. video families (HunyuanVideo, LTX-Video, CogVideoX 1.0 and 1.5, Wan 2.1, Wan 2.2's two experts): one block
   through ``VideoSession`` against the pipeline from the same initial latents (``tests/video/_bf16_cases.py``):
   the largest difference of the final latents. On CPU the suite holds these bit for bit.
3. the frame pipeline of each video family on one stage (several blocks, context frames, the family's block
   decode), decoded frames counted and dropped (the GPU image has no ffmpeg): frames/s and the peak device memory
   above the weights at 64, 256 and 1,024 frames, which should stay flat.

Each part and each family runs on its own, so one failure does not hide the others. Writes DIR/cuda_families.json
as it goes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from bench.common import DroppingWriter, machine, versions
from bench.cuda_video import run as measured_render
from bench.cuda_video import sync
from bench.video_models import use_test_fixtures

IMAGE_FIELDS = dict(prompt="red and blue stripes", negative_prompt="blurry", height=64, width=48, steps=4, seed=3)
IMAGE = {  # name: (fixture module, builder, spec fields, extra arguments of the pipeline's call)
    "SDXL": ("_tiny_sdxl", "save_tiny_sdxl", dict(guidance_scale=4.0, sampler="euler"), {}),
    "Flux (true CFG)": (
        "_tiny_flux", "save_tiny_flux", dict(steps=3, guidance_scale=3.5, true_cfg_scale=4.0, sampler="flow-euler"),
        {"true_cfg_scale": 4.0},
    ),
    "SD3.5": ("_tiny_sd3", "save_tiny_sd3", dict(height=80, guidance_scale=4.0), {}),
    "Qwen-Image (true CFG)": (
        "_tiny_qwenimage", "save_tiny_qwenimage", dict(steps=3, true_cfg_scale=4.0, sampler="flow-euler"),
        {"true_cfg_scale": 4.0},
    ),
    "Sana": ("_tiny_sana", "save_tiny_sana", dict(height=320, width=192, guidance_scale=4.5),
             {"use_resolution_binning": False}),
    "PixArt-alpha": (
        "_tiny_pixart", "save_tiny_pixart", dict(negative_prompt="", guidance_scale=4.5, sampler="dpm++", seed=6),
        {"negative_prompt": "", "clean_caption": False, "use_resolution_binning": False},
    ),
}
VIDEO_FRAMES = [64, 256, 1024]
FRAME_FAMILIES = {  # name: (fixture module, builder, builder arguments, spec fields)
    "wan": ("_tiny_wan_pipeline", "save_tiny_wan_pipeline", (), dict(steps=3)),
    "wan2.2-a14b": ("_tiny_wan22", "save_tiny_wan_two_experts", (), dict(steps=4)),
    "hunyuanvideo": ("_tiny_hunyuanvideo", "save_tiny_hunyuanvideo", (), dict(guidance_scale=6.0, steps=2)),
    "cogvideox-1.5": (
        "_tiny_cogvideox", "save_tiny_cogvideox", ("1.5", "dpm"),
        dict(negative_prompt="blurry", guidance_scale=3.0, steps=3),
    ),
    "ltx": ("_tiny_ltx", "save_tiny_ltx", (), dict(height=64, width=64, block_frames=16, context_frames=8, steps=2)),
}


def builder(module: str, name: str):
    use_test_fixtures()
    return getattr(__import__(module), name)


def image_case(name: str, root: Path, device: str) -> dict:
    from _diffusers_reference import diffusers_output

    from cluster.jobs.image import RenderSpec
    from pipelines.families import family_for_dir
    from pipelines.sampling import decode_latents
    from runtime.jobs.image_session import RenderSession

    module, build, fields, call = IMAGE[name]
    model_dir = builder(module, build)(root / module)
    spec = RenderSpec.from_dict(
        {"model": str(model_dir), "dtype": "bfloat16", "parallel": {"strategy": "none"}, **IMAGE_FIELDS, **fields}
    )
    pipe = family_for_dir(model_dir).load(model_dir, "bfloat16", device)
    sync(device)
    started = time.perf_counter()
    session = RenderSession(pipe, spec)
    while not session.loop.done:
        session.step()
    image = decode_latents(pipe, session.latents())
    sync(device)
    seconds = time.perf_counter() - started
    expected = diffusers_output(model_dir, spec, "bfloat16", device, **call).images[0]
    levels = np.abs(np.round(image * 255).astype(int) - np.round(expected * 255).astype(int))
    return {
        "family": family_for_dir(model_dir).name,
        "size": [spec.height, spec.width],
        "steps": spec.steps,
        "max_levels": int(levels.max()),
        "mean_levels": float(levels.mean()),
        "max_abs": float(np.abs(image - expected).max()),
        "image_std": float(image.std()),
        "tessera_s": seconds,
    }


def video_case(name: str, root: Path, device: str) -> dict:
    from _bf16_cases import CASES

    started = time.perf_counter()
    got, expected = CASES[name](root, device, make_writer=DroppingWriter)  # no ffmpeg on the GPU machine
    got, expected = got.cpu(), expected.cpu()
    return {
        "equal": bool(torch.equal(got, expected)),
        "max_abs": float((got.float() - expected.float()).abs().max()),
        "latent_abs_max": float(expected.float().abs().max()),
        "dtypes": [str(got.dtype), str(expected.dtype)],
        "seconds": time.perf_counter() - started,
    }


def frame_case(name: str, root: Path, device: str, lengths: list[int]) -> dict:
    from cluster.jobs.video import VideoSpec
    from pipelines.families import family_for_dir

    module, build, build_args, fields = FRAME_FAMILIES[name]
    model_dir = str(builder(module, build)(root / name, *build_args))
    pipe = family_for_dir(model_dir).load(model_dir, "bfloat16", device)
    base = dict(prompt="red and yellow stripes", height=32, width=32, block_frames=8, context_frames=4, fps=8.0,
                dtype="bfloat16", seed=0, guidance_scale=1.0)  # one branch unless a family's fields say otherwise
    rows = []
    for frames in [lengths[0], *lengths]:  # the first run warms up
        spec = VideoSpec(model=model_dir, frames=frames, **{**base, **fields})
        spec.validate()
        measured = measured_render(pipe, spec, root, device)  # one stage, frames dropped, peak memory reset
        rows.append({"frames": frames, "frames_out": measured.pop("frames"), **measured})
        print(f"  {name} {frames} frames: {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    return {"warm_up": rows[0], "rows": rows[1:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda", help="cpu for a dry run of the script")
    parser.add_argument("--parts", nargs="*", default=["image", "video", "frames"])
    parser.add_argument("--frames", type=int, nargs="*", default=VIDEO_FRAMES, help="lengths of part 3")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    use_test_fixtures()  # tests/ and tests/video on the path: the builders, _diffusers_reference, _bf16_cases
    root = Path(tempfile.mkdtemp(prefix="tessera-cuda-families-"))
    result: dict = {"command": "python -m bench.cuda_families " + " ".join(sys.argv[1:]), "machine": machine(),
                    "versions": versions(), "device": args.device}
    from _bf16_cases import CASES

    parts = {
        "image": (list(IMAGE), lambda name: image_case(name, root / "image", args.device)),
        "video": (list(CASES), lambda name: video_case(name, root / "video" / name.replace(" ", "_"), args.device)),
        "frames": (list(FRAME_FAMILIES), lambda name: frame_case(name, root / "frames", args.device, args.frames)),
    }
    for part in args.parts:
        names, run = parts[part]
        result[part] = {}
        for name in names:
            try:
                result[part][name] = run(name)
            except Exception:  # noqa: BLE001 - record it, go on with the others
                result[part][name] = {"error": traceback.format_exc()[-3000:]}
            print(f"{part} {name}: {json.dumps(result[part][name])[:400]}", file=sys.stderr, flush=True)
            (args.out / "cuda_families.json").write_text(json.dumps(result, indent=1))
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
