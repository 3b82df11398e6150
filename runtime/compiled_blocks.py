"""``compile=true``: the denoiser's repeated blocks compiled with torch.compile (regional compilation), per worker.

diffusers names each model's repeated block classes (``ModelMixin._repeated_blocks``) and compiles them with
``compile_repeated_blocks``; every block of a class shares one compiled graph, so compiling costs about one block's
trace, not the whole model's. What it lacks for a worker that keeps models across jobs of different settings:
turning compilation off for a job that did not ask for it, and back on without compiling again. Each block keeps
its compiled call (``torch.compile`` of its own ``_call_impl``, as ``nn.Module.compile`` makes it) in an attribute
and a job switches between it and the eager call; torch's own cache keeps the traced graphs, so only the first job
on a worker (and a change of strategy or cache, which changes what a block runs) pays the compile.
"""

from __future__ import annotations

import torch

COMPILED = "_tessera_compiled_call"


def set_compiled(model: torch.nn.Module, on: bool, block_classes: list[str]) -> dict:
    """Run the model's blocks of ``block_classes`` (its family's ``repeated_blocks``) compiled (``on``) or eager from now on; what metadata.json records:
    whether it runs compiled, how many blocks, and whether this call compiled them for the first time on this
    worker (the job that pays the compile)."""
    blocks = [module for module in model.modules() if type(module).__name__ in set(block_classes)]
    first = False
    for block in blocks:
        if on and not hasattr(block, COMPILED):
            setattr(block, COMPILED, torch.compile(block._call_impl))
            first = True
        block._compiled_call_impl = getattr(block, COMPILED) if on else None
    return {"compiled": bool(on and blocks), "blocks": len(blocks), "first_compile": first}
