"""The CUDA path on a one-GPU machine: the same code as on CPU, another device and backend.

    python -m bench.cuda_check --out DIR            # on the lent GPU machine (see BENCHMARKS.md)
    python -m bench.cuda_check --out DIR --cpu-only # a dry run of the same script here, tiny sizes

What it runs, each part on its own so that one failure does not hide the others:

1. NCCL: two ranks on the one GPU, an all-reduce. NCCL refuses two ranks on one device in most
   versions; the answer is recorded either way. If it works, patch parallelism (sync) over NCCL on the
   built-in UNet is compared with the unsplit forward on the same GPU.
2. Through the real Ray pool (a worker holding the GPU): the built-in model rendered on CUDA equals the
   CPU render of the same spec (PNG levels, PSNR).
3. Seconds per step and per-worker peak memory for the built-in model on one GPU at 1024, 2048 and 4096
   pixels square, float32 / bfloat16 / float16, beside the cost model's prediction for that GPU.
4. A DiT (tiny PixArt-alpha pipeline, built offline) rendered on CUDA through the pool.

Writes DIR/cuda.json (everything measured) and DIR/cuda.md (the BENCHMARKS.md section).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bench.common import median, provenance


def _nccl_rank(rank: int, world: int, port: int, out) -> None:
    try:
        torch.cuda.set_device(0)
        dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        t = torch.full((4,), float(rank + 1), device="cuda")
        dist.all_reduce(t)
        torch.cuda.synchronize()
        result: dict = {"all_reduce": float(t[0])}
        result.update(_patch_parity(rank, world, "cuda"))
        out.put((rank, True, json.dumps(result)))
    except BaseException:  # noqa: BLE001 - report anything to the parent
        out.put((rank, False, traceback.format_exc()[-2000:]))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _patch_parity(rank: int, world: int, device: str) -> dict:
    """Patch-parallel (sync) built-in UNet over the group against the same forward unsplit on one device."""
    from parallel.patch.bands import band_bounds, gather_bands, slice_band
    from parallel.patch.config import PatchConfig
    from pipelines.builtin import resolve_model
    from pipelines.families.sd.patch import parallelize_unet_patch, unet_alignment
    from pipelines.loading import load_pipeline

    pipe = load_pipeline(resolve_model("builtin-image"), "float32", device)
    unet = pipe.unet.eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, unet.config.in_channels, 64, 64, generator=g).to(device)
    text = torch.randn(2, 77, unet.config.cross_attention_dim, generator=g).to(device)
    with torch.no_grad():
        ref = unet(x, 500, encoder_hidden_states=text).sample
        bounds = band_bounds(x.shape[2], world, unet_alignment(unet))
        handle = parallelize_unet_patch(unet, dist.group.WORLD, PatchConfig("sync"))
        band = unet(slice_band(x, bounds, rank), 500, encoder_hidden_states=text).sample
        full = gather_bands(band, dist.group.WORLD, bounds)
        handle.remove()
    return {"patch_sync_max_abs_err": float((full - ref).abs().max()), "bounds": bounds}


def nccl_two_ranks_one_gpu(timeout: float = 120.0) -> dict:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_nccl_rank, args=(r, 2, port, out)) for r in range(2)]
    for p in procs:
        p.start()
    results: dict = {}
    deadline = time.monotonic() + timeout
    try:
        while len(results) < 2 and time.monotonic() < deadline:
            try:
                rank, ok, payload = out.get(timeout=5)
            except Exception:  # noqa: BLE001 - queue.Empty
                if not any(p.is_alive() for p in procs):
                    break
                continue
            results[rank] = json.loads(payload) if ok else {"error": payload}
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    if len(results) < 2:
        results["timeout_or_crash"] = f"got {sorted(results)} of 2 ranks within {timeout:g} s"
    return results


def _spec(size: int, steps: int, dtype: str, model: str = "builtin-image", prompt: str = ""):
    from cluster.jobs.image import RenderSpec

    spec = RenderSpec(
        model=model,
        prompt=prompt or "red and white stripes",
        height=size,
        width=size,
        steps=steps,
        seed=7,
        dtype=dtype,
        guidance_scale=5.0,
    )
    spec.validate()
    return spec


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) / 255 - b.astype(np.float64) / 255) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def pool_parity(cpu_pool, gpu_pool, size: int, steps: int) -> dict:
    from runtime.jobs.image import run_render

    spec = _spec(size, steps, "float32")
    cpu = np.asarray(run_render(cpu_pool, spec, progress=False).image)
    gpu = np.asarray(run_render(gpu_pool, spec, progress=False).image)
    diff = np.abs(cpu.astype(int) - gpu.astype(int))
    return {
        "size": size,
        "steps": steps,
        "max_level_diff": int(diff.max()),
        "mean_level_diff": float(diff.mean()),
        "psnr_db": psnr(cpu, gpu),
    }


def speed(gpu_pool, sizes: list[int], dtypes: list[str], steps: int, device_name: str) -> list[dict]:
    from parallel.cost.predict import cached_profile, predict
    from runtime.jobs.image import run_render

    rows = []
    for size in sizes:
        for dtype in dtypes:
            row: dict = {"size": size, "dtype": dtype, "steps": steps}
            try:
                spec = _spec(size, steps, dtype)
                run_render(gpu_pool, _spec(size, 2, dtype), progress=False, decode=False)  # warm
                started = time.perf_counter()
                result = run_render(gpu_pool, spec, progress=False)
                row["wall_s"] = time.perf_counter() - started
                meta = result.metadata
                step_s = meta["timings"]["step_s"]
                row["step_s_median"] = median(step_s[2:] if len(step_s) > 4 else step_s)
                row["timings"] = {k: v for k, v in meta["timings"].items() if k != "step_s"}
                row["peak_memory_bytes"] = [w.get("peak_memory_bytes") for w in meta["workers"]]
            except Exception:  # noqa: BLE001 - record and go on
                row["error"] = traceback.format_exc()[-1500:]
            try:
                profile = cached_profile("builtin-image", size, size)
                p = predict(profile, "none", 1, device_name, "nvlink4", steps=steps)
                row["predicted_step_s"] = p.mean_step_s
                row["predicted_memory_bytes"] = p.memory_bytes
            except Exception:  # noqa: BLE001
                row["predict_error"] = traceback.format_exc()[-800:]
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
    return rows


def dit_render(gpu_pool, size: int, steps: int) -> dict:
    from runtime.jobs.image import run_render
    from tests._tiny_pixart import save_tiny_pixart

    path = save_tiny_pixart(Path(tempfile.mkdtemp(prefix="tessera-pixart-")) / "pixart")
    spec = _spec(size, steps, "float32", model=str(path), prompt="blue and yellow vertical stripes")
    started = time.perf_counter()
    result = run_render(gpu_pool, spec, progress=False)
    step_s = result.metadata["timings"]["step_s"]
    return {
        "size": size,
        "steps": steps,
        "wall_s": time.perf_counter() - started,
        "step_s_median": median(step_s),
        "image_shape": list(np.asarray(result.image).shape),
    }


def attempt(name: str, results: dict, fn, *args) -> None:
    started = time.perf_counter()
    try:
        results[name] = fn(*args)
    except Exception:  # noqa: BLE001 - one part failing must not hide the others
        results[name] = {"error": traceback.format_exc()[-2500:]}
    results[name + "_s"] = round(time.perf_counter() - started, 1)
    print(f"== {name}: {json.dumps(results[name])[:3000]}", file=sys.stderr, flush=True)


def markdown(results: dict, command: str) -> str:
    lines = ["## CUDA path on one GPU", "", provenance(command)]
    nccl = results.get("nccl", {})
    lines += ["NCCL, two ranks on the one GPU (all-reduce, then patch parallel sync vs unsplit forward):", ""]
    lines += ["```", json.dumps(nccl, indent=1)[:2500], "```", ""]
    par = results.get("parity", {})
    lines += [f"CPU vs CUDA render through the Ray pool (float32, same spec): `{json.dumps(par)[:1500]}`", ""]
    lines += [
        "| size | dtype | s/step measured (median) | s/step predicted | wall s (incl. decode) | "
        "peak GPU MiB | predicted MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results.get("speed", []) if isinstance(results.get("speed"), list) else []:
        if "error" in r:
            lines.append(f"| {r['size']} | {r['dtype']} | error: {r['error'].splitlines()[-1][:120]} | | | | |")
            continue
        mem = max(m for m in r["peak_memory_bytes"] if m) / 2**20 if any(r["peak_memory_bytes"]) else float("nan")
        pred = r.get("predicted_step_s", float("nan"))
        pmem = r.get("predicted_memory_bytes", float("nan")) / 2**20
        lines.append(
            f"| {r['size']} | {r['dtype']} | {r['step_s_median']:.4f} | {pred:.4f} | {r['wall_s']:.2f} | "
            f"{mem:.0f} | {pmem:.0f} |"
        )
    lines += ["", f"DiT (tiny PixArt-alpha) through the pool on CUDA: `{json.dumps(results.get('dit'))[:800]}`"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cpu-only", action="store_true", help="dry run here: CPU for CUDA, tiny sizes")
    parser.add_argument("--sizes", type=int, nargs="*", default=[1024, 2048, 4096])
    parser.add_argument("--dtypes", nargs="*", default=["float32", "bfloat16", "float16"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--skip", nargs="*", default=[], help="parts to skip: nccl parity speed dit")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python -m bench.cuda_check " + " ".join(sys.argv[1:])
    import ray

    from runtime.pool import DevicePool, PoolConfig

    results: dict = {"torch": torch.__version__, "cuda": torch.version.cuda}
    gpu_kind = "cpu" if args.cpu_only else "cuda"
    if torch.cuda.is_available():
        results["gpu"] = torch.cuda.get_device_name(0)
        results["nccl_version"] = ".".join(map(str, torch.cuda.nccl.version()))
    device_name = "h200" if "H200" in results.get("gpu", "") else "h100"
    sizes = [256] if args.cpu_only else args.sizes
    dtypes = ["float32"] if args.cpu_only else args.dtypes
    if "nccl" not in args.skip and not args.cpu_only:
        attempt("nccl", results, nccl_two_ranks_one_gpu)
    ray.init(
        num_cpus=4, num_gpus=0 if args.cpu_only else 1, include_dashboard=False, logging_level=logging.WARNING
    )
    gpu_pool = DevicePool(PoolConfig(workers=1, device=gpu_kind))
    results["worker"] = gpu_pool.infos
    if "parity" not in args.skip:
        cpu_pool = DevicePool(PoolConfig(workers=1, device="cpu"))
        attempt("parity", results, pool_parity, cpu_pool, gpu_pool, 256, 10)
        cpu_pool.shutdown()
    if "speed" not in args.skip:
        attempt("speed", results, speed, gpu_pool, sizes, dtypes, 4 if args.cpu_only else args.steps, device_name)
    if "dit" not in args.skip:
        attempt("dit", results, dit_render, gpu_pool, 256 if args.cpu_only else 1024, 4 if args.cpu_only else 20)
    gpu_pool.shutdown()
    ray.shutdown()
    (args.out / "cuda.json").write_text(json.dumps(results, indent=1, default=str))
    body = markdown(results, command)
    (args.out / "cuda.md").write_text(body)
    print(body)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
