"""Write the built-in models to pipelines/builtin/ in diffusers format (safetensors).

    python -m pipelines.build_builtin [--seed 0]

Random weights; the training command replaces them with trained ones.
"""

from __future__ import annotations

import argparse

from pipelines.builtin_image import build_image_pipeline
from pipelines.registry import BUILTIN_MODELS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    target = BUILTIN_MODELS["builtin-image"].path
    build_image_pipeline(args.seed).save_pretrained(target, safe_serialization=True)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
