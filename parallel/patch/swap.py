"""Swapping a module's forward or attention processor in place, with the function that swaps it back: how every
patch plan changes a model (``parallelize_patch`` collects the undo functions in its handle)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def replace_forward(module: nn.Module, forward: Callable) -> Callable[[], None]:
    """Make ``forward`` ``module``'s forward (an instance attribute over the class's); returns the undo."""
    module.forward = forward

    def undo() -> None:
        del module.forward

    return undo


def install_processor(attn: nn.Module, processor: object) -> Callable[[], None]:
    """Set ``processor`` on the attention module ``attn``; returns the function that restores the old one."""
    old = attn.processor
    attn.set_processor(processor)

    def undo() -> None:
        attn.set_processor(old)

    return undo
