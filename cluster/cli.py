"""The `tessera` command. Each subcommand takes Hydra overrides, e.g.

tessera render model=builtin-image height=512 width=512 steps=20 seed=1
tessera render --cfg          # print the composed config and exit
"""

from __future__ import annotations

import argparse
import json
import sys

from cluster.spec import SpecError


def _render(overrides: list[str], print_config: bool) -> int:
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from cluster.config import compose, pool_from_config, render_spec_from_config

    try:
        cfg = compose("render", overrides)
    except (HydraException, OmegaConfBaseException) as err:
        print(f"tessera: bad override: {err}", file=sys.stderr)
        return 2
    if print_config:
        print(OmegaConf.to_yaml(cfg))
        return 0
    try:
        spec = render_spec_from_config(cfg)
        pool, address = pool_from_config(cfg)
        spec.check_fits(pool.workers)
    except (SpecError, OmegaConfBaseException, TypeError) as err:
        print(f"tessera: invalid job: {err}", file=sys.stderr)
        return 2
    from cluster.render import render

    output = render(spec, pool, address=address, progress=bool(cfg.progress))
    timings = output.metadata["timings"]
    print(f"wrote {output.directory / 'image.png'}")
    print(json.dumps({"job_id": output.job_id, "total_s": round(timings["total_s"], 2)}))
    return 0


def _models() -> int:
    from pipelines.registry import BUILTIN_MODELS

    for model in BUILTIN_MODELS.values():
        print(f"{model.name:16s} {model.kind:6s} {model.description}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tessera", description="Render and train diffusion models on a pool."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="render one image (Hydra overrides: key=value ...)")
    render.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. height=512 steps=20")
    render.add_argument("--cfg", action="store_true", help="print the composed config and exit")
    sub.add_parser("models", help="list the built-in models")
    args = parser.parse_args(argv)
    if args.command == "render":
        return _render(args.overrides, args.cfg)
    return _models()


if __name__ == "__main__":
    sys.exit(main())
