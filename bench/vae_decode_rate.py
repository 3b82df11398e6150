"""How fast a video VAE's decode runs per FLOP on a device: what the cost model's ``decode_efficiency`` is.

    python -m bench.vae_decode_rate --device cpu --device-spec cpu-core --size 64 64 --frames 2 --out DIR
    python -m bench.vae_decode_rate --device cuda --device-spec h200 --dtype bfloat16 --size 480 832 --frames 2 5

Each of diffusers' video VAEs at its default config (random weights: the speed does not depend on them) decodes
``frames`` latent frames at the size; FLOPs and ops are counted on the meta device by the cost model itself
(``parallel.cost.video_decode.decode_flops``), the time is the fastest of ``--repeats`` decodes after a warm-up
(wall with the device synchronised; one torch thread on CPU). The implied efficiency is the measured FLOP rate over
the device spec's ``flops`` (its calibrated denoiser rate). Needs torch and diffusers only (no Ray). Writes
DIR/vae_decode_rate.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from parallel.cost.models import ModelSpec
from parallel.cost.specs import load_specs
from parallel.cost.video_decode import decode_flops

VAES = {  # class: (latent channels, pixels per latent row)
    "AutoencoderKLWan": (16, 8),
    "AutoencoderKLCogVideoX": (16, 8),
    "AutoencoderKLHunyuanVideo": (16, 8),
    "AutoencoderKLLTXVideo": (128, 32),
}


def spec_for(name: str, channels: int, scale: int, dtype: str) -> ModelSpec:
    """The VAE at diffusers' default config, described as a video model's decode is (``ModelSpec.vae_*``)."""
    import diffusers

    with torch.device("meta"):
        vae = getattr(diffusers, name)()
    config = {k: v for k, v in dict(vae.config).items() if not k.startswith("_")}
    return ModelSpec(name=name, class_name="", config={}, kind="video-dit", latent_channels=channels,
                     vae_scale=scale, dtype=dtype, vae_class=name, vae_config=config)


def timed_decode(vae, latent: torch.Tensor, repeats: int) -> float:
    """The fastest of ``repeats`` decodes after one warm-up, in seconds."""
    kwargs = {"temb": torch.zeros(1, device=latent.device, dtype=latent.dtype)} if getattr(
        vae.config, "timestep_conditioning", False) else {}
    sync = torch.cuda.synchronize if latent.device.type == "cuda" else (lambda: None)
    best = float("inf")
    with torch.no_grad():
        for run in range(repeats + 1):
            sync()
            started = time.perf_counter()
            vae.decode(latent, **kwargs)
            sync()
            if run:
                best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--device-spec", default="cpu-core", help="the specs.yaml device to compare with")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--size", type=int, nargs=2, default=[64, 64], metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--frames", type=int, nargs="*", default=[2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vaes", nargs="*", default=list(VAES))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    import diffusers

    if args.device == "cpu":
        torch.set_num_threads(1)
    dev = load_specs().device(args.device_spec)
    height, width = args.size
    rows = []
    for name in args.vaes:
        channels, scale = VAES[name]
        spec = spec_for(name, channels, scale, args.dtype)
        torch.manual_seed(0)
        vae = getattr(diffusers, name)(**spec.vae_config).to(args.device, getattr(torch, args.dtype)).eval()
        for frames in args.frames:
            flops, ops = decode_flops(spec, height, width, frames, args.dtype)
            latent = torch.randn(1, channels, frames, height // scale, width // scale, device=args.device,
                                 dtype=getattr(torch, args.dtype))
            seconds = timed_decode(vae, latent, args.repeats)
            rate = flops / seconds
            rows.append({"vae": name, "frames": frames, "size": [height, width], "gflop": flops / 1e9, "ops": ops,
                         "seconds": seconds, "gflop_per_s": rate / 1e9, "implied_efficiency": rate / dev.flops})
            print(f"{name:26s} {frames} latent frames {height}x{width}: {flops / 1e9:9.1f} GFLOP in {seconds:8.4f} s, "
                  f"{rate / 1e9:9.1f} GFLOP/s, {rate / dev.flops:.2f}x {dev.name}'s flops", file=sys.stderr, flush=True)
        del vae
    result = {"command": "python -m bench.vae_decode_rate " + " ".join(sys.argv[1:]), "device": args.device,
              "device_spec": dev.name, "spec_flops": dev.flops, "torch": torch.__version__,
              "diffusers": diffusers.__version__, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vae_decode_rate.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
