"""The OpenAI-style request fields the images and videos routes share, read into a Tessera spec."""

from __future__ import annotations

import re
from typing import Any

from cluster.http.errors import ApiError

SIZE = re.compile(r"^(\d{1,6})x(\d{1,6})$")
RENAMED = {"num_inference_steps": "steps"}
"""OpenAI-style names (SGLang's, vLLM-Omni's) of spec fields."""
IGNORED = ("user", "quality", "style", "background", "moderation", "output_compression", "output_format")
"""OpenAI fields that mean nothing to a diffusion render here; accepted and left out."""


def read_size(size: Any) -> dict[str, int]:
    """``"WIDTHxHEIGHT"`` as the spec's width and height (which check the multiples)."""
    match = SIZE.match(size) if isinstance(size, str) else None
    if match is None:
        raise ApiError(422, "size", f"expected 'WIDTHxHEIGHT' such as '512x512', got {size!r}")
    return {"width": int(match.group(1)), "height": int(match.group(2))}


def spec_fields(body: dict[str, Any], own: tuple[str, ...]) -> dict[str, Any]:
    """The request's fields but the route's ``own`` ones, as spec fields (renamed where OpenAI's name
    differs); a field the spec lacks is left in, for the spec to refuse naming it."""
    spec: dict[str, Any] = {}
    for name, value in body.items():
        if name in own or name in IGNORED:
            continue
        spec[RENAMED.get(name, name)] = value
    if "size" in body and body["size"] is not None:
        spec.update(read_size(body["size"]))
    return spec
