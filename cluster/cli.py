"""The `tessera` command. Each subcommand takes Hydra overrides, e.g.

tessera render model=builtin-image height=512 width=512 steps=20 seed=1
tessera render --cfg          # print the composed config and exit
tessera render job=video frames=64 parallel=frames parallel.degree=2   # video.mp4, frame pipeline
tessera serve pool.workers=2 # run the controller; then from other shells:
tessera submit steps=30 --priority 5 ; tessera list ; tessera wait JOB ; tessera logs JOB
tessera submit job=video frames=256 parallel.degree=2 --priority 1   # a video job, to the same controller
tessera train model=builtin-image parallel.stages=2 unet.steps=900
tessera token create studio-a     # a bearer token for the HTTP API that `tessera serve` starts (http.port)
"""

from __future__ import annotations

import argparse
import sys

from cluster.cli_jobs import add_job_commands
from cluster.cli_tokens import add_token_command, token_command
from cluster.errors import SpecError


def _models() -> int:
    from pipelines.builtin import BUILTIN_MODELS

    for model in BUILTIN_MODELS.values():
        print(f"{model.name:16s} {model.kind:6s} {model.description}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tessera", description="Render and train diffusion models on a pool."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    job_handlers = add_job_commands(sub)
    add_token_command(sub)
    sub.add_parser("models", help="list the built-in models")
    train = sub.add_parser("train", help="train a model on Ray Train + DeepSpeed (Hydra overrides)")
    train.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. parallel.stages=2 unet.steps=500")
    train.add_argument("--cfg", action="store_true", help="print the composed config and exit")
    args = parser.parse_args(argv)
    if args.command in job_handlers:
        try:
            return job_handlers[args.command](args)
        except SpecError as err:  # one line, also when it comes from the served controller through Ray
            what = "invalid setting" if args.command == "serve" and err.field.startswith("http") else "invalid job"
            print(f"tessera: {what}: {err.field}: {err.message}", file=sys.stderr)
            return 2
        except (ConnectionError, KeyError, PermissionError) as err:  # PermissionError: a token the API refused
            print(f"tessera: {err.args[0] if type(err) is KeyError else err}", file=sys.stderr)
            return 2
    if args.command == "token":
        try:
            return token_command(args)
        except (SpecError, KeyError) as err:
            print(f"tessera: {err.args[0] if isinstance(err, KeyError) else err}", file=sys.stderr)
            return 2
    if args.command == "train":
        from cluster.train import train_command

        return train_command(args.overrides, args.cfg)
    return _models()


if __name__ == "__main__":
    sys.exit(main())
