"""A table of malformed job submissions, each with the field its refusal must name.

Every row is a change to a valid submission of one job kind (``IMAGE`` or ``VIDEO``): fields that replace the
valid spec's (a nested mapping such as ``parallel`` replaces the whole value), or submission arguments
(``priority``, ``client_token``). ``where`` says who can tell the submission is wrong:

- "spec": the spec alone (``cluster.jobs.parse_job``), before anything is stored or contacted;
- "admission": the submission arguments alone (``cluster.admission``);
- "service": only the controller, which knows its pools and its store (a device no pool has, more workers
  than a pool holds, a client token already used with another spec).

The rows are grouped by the family of mistake (``mistake``) so that a representative subset can run through a
real controller and the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NAN, INF = float("nan"), float("inf")

IMAGE: dict[str, Any] = {"height": 64, "width": 64, "steps": 2, "seed": 1, "parallel": {"strategy": "none"}}
"""A valid image job: the built-in image model, 64x64, two steps on one worker."""
VIDEO: dict[str, Any] = {
    "job": "video",
    "height": 32,
    "width": 32,
    "frames": 16,
    "block_frames": 8,
    "steps": 2,
    "parallel": {"strategy": "frames", "degree": 2},
}
"""A valid video job: the built-in video model, 16 frames of 32x32 in 2 blocks, 2 stages."""
BASES = {"image": IMAGE, "video": VIDEO}


@dataclass(frozen=True)
class Malformed:
    mistake: str
    """The family of mistake: sizes, types, nan, text, paths, unknown, kinds, nesting, segments, steps, job,
    device, tokens, priority."""
    change: dict[str, Any]
    """Fields that replace the valid spec's (``None`` values included: a field sent as null)."""
    field: str
    """The field the refusal must name (``SpecError.field``, and the start of its message)."""
    kind: str = "image"
    """The valid spec the change applies to: "image" or "video"."""
    where: str = "spec"
    """Who can refuse it: "spec", "admission" or "service" (see the module's docstring)."""
    submit: dict[str, Any] = field(default_factory=dict)
    """Submission arguments: priority, client_token."""

    def spec(self) -> dict[str, Any]:
        """The malformed spec as plain data."""
        return {**BASES[self.kind], **self.change}

    def __str__(self) -> str:  # the pytest id: short, printable
        shown = repr({**self.change, **self.submit})
        return f"{self.kind}-{self.field}-{shown[:40]}"


def _rows(mistake: str, field_rows: list[tuple], kind: str = "image", where: str = "spec") -> list[Malformed]:
    return [Malformed(mistake, change, name, kind, where) for change, name in field_rows]


def _patch(**fields: Any) -> dict[str, Any]:
    """A patch-parallel mapping on 2 workers with ``fields`` changed."""
    return {"parallel": {"strategy": "patch", "degree": 2, **fields}}


SIZES = _rows(
    "sizes",
    [
        ({"height": 0}, "height"),
        ({"height": -64}, "height"),
        ({"width": -8}, "width"),
        ({"height": 100}, "height"),  # not a multiple of 8
        ({"width": 60}, "width"),
        ({"height": 10**30}, "height"),
        ({"width": 32768}, "width"),
        ({"height": 16384, "width": 16384}, "height"),  # each side allowed, too many pixels
        ({"steps": 0}, "steps"),
        ({"steps": -3}, "steps"),
        ({"steps": 2**70}, "steps"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**64}, "seed"),
        ({"guidance_scale": 1e9}, "guidance_scale"),
        ({"guidance_scale": -0.5}, "guidance_scale"),
        ({"true_cfg_scale": -1.0}, "true_cfg_scale"),
        ({"true_cfg_scale": 1e9}, "true_cfg_scale"),
        ({"parallel": {"strategy": "none", "ring": 0}}, "parallel.ring"),
        ({"parallel": {"strategy": "none", "degree": 0}}, "parallel.degree"),
        (_patch(degree=-2), "parallel.degree"),
        (_patch(degree=10**30), "parallel.degree"),
        (_patch(warmup_steps=-1), "parallel.warmup_steps"),
        (_patch(warmup_steps=10**30), "parallel.warmup_steps"),
        ({"prompt": "stripes " * 25_000}, "prompt"),  # 200,000 characters
    ],
) + _rows(
    "sizes",
    [
        ({"frames": 0}, "frames"),
        ({"frames": -16}, "frames"),
        ({"frames": 10**12}, "frames"),
        ({"block_frames": 0}, "block_frames"),
        ({"block_frames": 1000}, "block_frames"),
        ({"context_frames": -1}, "context_frames"),
        ({"context_frames": 9}, "context_frames"),  # more than block_frames
        ({"block_stride": 0}, "block_stride"),
        ({"block_stride": 3}, "block_stride"),  # more than steps
        ({"fps": 0}, "fps"),
        ({"fps": -8}, "fps"),
        ({"fps": 10_000}, "fps"),
        ({"height": 40}, "height"),  # not a multiple of 16
        ({"width": 8192}, "width"),
        ({"steps": 5000}, "steps"),
        ({"parallel": {"strategy": "frames", "degree": 3}}, "parallel.degree"),  # 2 frame blocks
        ({"parallel": {"strategy": "frames", "degree": 0}}, "parallel.degree"),
    ],
    kind="video",
)

TYPES = _rows(
    "types",
    [
        ({"height": True}, "height"),
        ({"width": 64.0}, "width"),
        ({"steps": "20"}, "steps"),
        ({"seed": 1.5}, "seed"),
        ({"seed": None}, "seed"),
        ({"prompt": None}, "prompt"),
        ({"prompt": ["stripes", "dots"]}, "prompt"),
        ({"negative_prompt": {"text": "blurry"}}, "negative_prompt"),
        ({"model": 5}, "model"),
        ({"model": None}, "model"),
        ({"dtype": None}, "dtype"),
        ({"dtype": 32}, "dtype"),
        ({"sampler": None}, "sampler"),
        ({"sampler": ["ddim"]}, "sampler"),
        ({"guidance_scale": "5"}, "guidance_scale"),
        ({"guidance_scale": True}, "guidance_scale"),
        ({"output_dir": 0}, "output_dir"),
        ({"device": None}, "device"),
        ({"device": ["cpu"]}, "device"),
        (_patch(degree=2.0), "parallel.degree"),
        (_patch(degree="2"), "parallel.degree"),
        (_patch(degree=True), "parallel.degree"),
        (_patch(cfg=1), "parallel.cfg"),
        ({"parallel": {"strategy": None}}, "parallel.strategy"),
        (_patch(mode=None), "parallel.mode"),
        (_patch(warmup_steps=1.5), "parallel.warmup_steps"),
        (_patch(mode="displaced", stale_dtype=16), "parallel.stale_dtype"),
        (_patch(kv_source=None), "parallel.kv_source"),
        ({"true_cfg_scale": "4"}, "true_cfg_scale"),
        ({"true_cfg_scale": True}, "true_cfg_scale"),
        ({"parallel": {"strategy": "none", "ring": 1.5}}, "parallel.ring"),
        ({"parallel": {"strategy": "none", "ring": "2"}}, "parallel.ring"),
    ],
) + _rows(
    "types",
    [
        ({"frames": 16.0}, "frames"),
        ({"block_frames": "8"}, "block_frames"),
        ({"fps": "8"}, "fps"),
        ({"fps": True}, "fps"),
        ({"context_frames": None}, "context_frames"),
        ({"steps": 2.0}, "steps"),
        ({"parallel": {"strategy": "frames", "degree": 1.5}}, "parallel.degree"),
        ({"parallel": {"strategy": "frames", "degree": True}}, "parallel.degree"),
    ],
    kind="video",
)

NANS = _rows(
    "nan",
    [
        ({"guidance_scale": NAN}, "guidance_scale"),
        ({"guidance_scale": INF}, "guidance_scale"),
        ({"guidance_scale": -INF}, "guidance_scale"),
        ({"height": INF}, "height"),
        ({"steps": NAN}, "steps"),
        ({"seed": NAN}, "seed"),
        ({"true_cfg_scale": NAN}, "true_cfg_scale"),
        ({"true_cfg_scale": INF}, "true_cfg_scale"),
        ({"true_cfg_scale": -INF}, "true_cfg_scale"),
    ],
) + _rows(
    "nan",
    [
        ({"guidance_scale": NAN}, "guidance_scale"),
        ({"guidance_scale": INF}, "guidance_scale"),
        ({"fps": NAN}, "fps"),
        ({"fps": INF}, "fps"),
        ({"fps": -INF}, "fps"),
        ({"frames": INF}, "frames"),
    ],
    kind="video",
)

TEXT = _rows(
    "text",
    [
        ({"sampler": "ddim\x00"}, "sampler"),
        ({"sampler": "ＤＤＩＭ"}, "sampler"),  # fullwidth letters
        ({"sampler": "ddim\n"}, "sampler"),
        ({"dtype": "float32\u200b"}, "dtype"),  # a zero-width space
        ({"dtype": "🔥"}, "dtype"),
        ({"device": "cpu\x00"}, "device"),
        ({"device": "cpu\n--priority 9"}, "device"),
        ({"device": "\u202ecpu"}, "device"),  # a right-to-left override
        ({"device": "gpu" * 2000}, "device"),
        ({"model": "builtin-image\x00"}, "model"),
        ({"model": "builtin\u2010image"}, "model"),  # a Unicode hyphen
        ({"model": "builtin-image\n"}, "model"),
        ({"prompt": "stripes \ud800"}, "prompt"),  # a lone surrogate is no text
        ({"negative_prompt": "\udcff"}, "negative_prompt"),
    ],
) + _rows(
    "text",
    [
        ({"model": "builtin-video\t"}, "model"),
        ({"device": "cuda\r"}, "device"),
    ],
    kind="video",
)

PATHS = _rows(
    "paths",
    [
        ({"model": "x" * 5000}, "model"),
        ({"model": "/" + "a" * 300}, "model"),  # a name longer than any file system allows
        ({"model": "../" * 12 + "etc"}, "model"),
        ({"model": "/dev/null"}, "model"),
        ({"model": "~no-such-user-tessera/models/sd"}, "model"),
        ({"output_dir": "out\x00puts"}, "output_dir"),
        ({"output_dir": "o" * 5000}, "output_dir"),
        ({"output_dir": "outputs/" + "y" * 300}, "output_dir"),
        ({"output_dir": "../outside"}, "output_dir"),
        ({"output_dir": "/tmp/a/../../etc"}, "output_dir"),
        ({"output_dir": "   "}, "output_dir"),
        ({"output_dir": "out\nputs"}, "output_dir"),
        ({"segments": [{"steps": 2, "model": "x" * 5000}]}, "segments[0].model"),
        ({"segments": [{"steps": 2, "model": "../" * 12 + "etc"}]}, "segments[0].model"),
        ({"segments": [{"steps": 1}, {"steps": 1, "model": "builtin-image\x00"}]}, "segments[1].model"),
    ],
) + _rows(
    "paths",
    [
        ({"output_dir": "renders/../.."}, "output_dir"),
        ({"output_dir": "v\x00"}, "output_dir"),
        ({"model": "m" * 5000}, "model"),
    ],
    kind="video",
)

UNKNOWN = _rows(
    "unknown",
    [
        ({"heigth": 64}, "heigth"),
        ({"widht": 64}, "widht"),
        ({"stpes": 2}, "stpes"),
        ({"Height": 64}, "Height"),
        ({"guidance": 5.0}, "guidance"),
        ({"resolution": 512}, "resolution"),
        ({"true_cfg": 4.0}, "true_cfg"),
        ({"parallel": {"strategy": "none", "degre": 1}}, "parallel.degre"),
        ({"parallel": {"stratgy": "none"}}, "parallel.stratgy"),
        ({"segments": [{"steps": 2, "modle": "builtin-image"}]}, "segments[0].modle"),
    ],
) + _rows(
    "unknown",
    [
        ({"frame": 16}, "frame"),
        ({"parallel": {"strategy": "frames", "stages": 2}}, "parallel.stages"),
        ({"notes": ["rounded up"]}, "notes"),  # set while validating, not an input
    ],
    kind="video",
)

KINDS = _rows(
    "kinds",  # a field of the other job kind
    [
        ({"frames": 8}, "frames"),
        ({"block_frames": 4}, "block_frames"),
        ({"fps": 24}, "fps"),
        ({"model": "builtin-video"}, "model"),
        ({"parallel": {"strategy": "frames", "degree": 2}}, "parallel.strategy"),
    ],
) + _rows(
    "kinds",
    [
        ({"sampler": "ddim"}, "sampler"),
        ({"segments": []}, "segments"),
        ({"parallel": {"strategy": "frames", "degree": 2, "cfg": True}}, "parallel.cfg"),
        ({"parallel": {"strategy": "patch", "degree": 2, "mode": "fast"}}, "parallel.mode"),
        ({"model": "builtin-image"}, "model"),
        ({"parallel": {"strategy": "steps", "degree": 2}}, "parallel.strategy"),
    ],
    kind="video",
)

NESTING = _rows(
    "nesting",
    [
        ({"parallel": ["patch", 2]}, "parallel"),
        ({"parallel": "patch"}, "parallel"),
        ({"parallel": None}, "parallel"),
        ({"segments": {"steps": 2}}, "segments"),
        ({"segments": "builtin-image"}, "segments"),
        ({"segments": None}, "segments"),
        ({"segments": [["builtin-image", 2]]}, "segments[0]"),
        ({"segments": [{"steps": 2}, None]}, "segments[1]"),
    ],
) + _rows("nesting", [({"parallel": [2]}, "parallel")], kind="video")

SEGMENTS = _rows(
    "segments",
    [
        ({"steps": 4, "segments": [{"steps": 1}]}, "segments"),
        ({"steps": 2, "segments": [{"steps": 2}, {"steps": 2}]}, "segments"),
        ({"segments": [{"steps": 0}, {"steps": 2}]}, "segments[0].steps"),
        ({"steps": 2, "segments": [{"steps": -1}, {"steps": 3}]}, "segments[0].steps"),
        ({"segments": [{"model": "builtin-image"}]}, "segments[0].steps"),
        ({"segments": [{"steps": "2"}]}, "segments[0].steps"),
        ({"segments": [{"steps": 2, "model": "builtin-video"}]}, "segments[0].model"),
        ({"segments": [{"steps": 2, "device": None}]}, "segments[0].device"),
        ({"segments": [{"steps": 2, "device": "cpu\x00"}]}, "segments[0].device"),
    ],
)

STEPS = _rows(
    "steps",  # more steps than the sampler can take on the model's training schedule
    [
        ({"steps": 1000}, "steps"),  # the built-in model's own DDIM, "leading" spacing with steps_offset 1
        ({"steps": 1000, "sampler": "ddim"}, "steps"),
        ({"steps": 999, "sampler": "dpm++"}, "steps"),
        ({"steps": 1000, "sampler": "dpm++"}, "steps"),
        ({"steps": 1000, "segments": [{"steps": 600}, {"steps": 400, "model": "builtin-image"}]}, "steps"),
    ],
)

JOB = [
    Malformed("job", {"job": name}, "job")
    for name in ("audio", "Video", None, ["video"], {"kind": "video"}, 1, "")
]

DEVICE = _rows(
    "device",
    [
        ({"device": "tpu"}, "device"),
        ({"device": "h100"}, "device"),
        ({"segments": [{"steps": 1}, {"steps": 1, "device": "tpu"}]}, "segments[1].device"),
        (
            {"height": 256, "parallel": {"strategy": "patch", "degree": 4}},
            "parallel.degree",
        ),  # the pool has 2
    ],
    where="service",
) + _rows(
    "device",
    [
        ({"device": "cuda"}, "device"),
        ({"frames": 32, "parallel": {"strategy": "frames", "degree": 3}}, "parallel.degree"),
    ],
    kind="video",
    where="service",
)

REUSED_TOKEN = "shot-reused"
"""The token the service test first submits the valid image job with; a row reuses it with another seed."""

TOKENS = [
    Malformed("tokens", {}, "client_token", where="admission", submit={"client_token": token})
    for token in ("", "   ", 7, {"id": 1}, ["shot-1"], True, "t" * 300, "shot\n42", "\ud800")
] + [Malformed("tokens", {"seed": 9}, "client_token", where="service", submit={"client_token": REUSED_TOKEN})]

PRIORITIES = [
    Malformed("priority", {}, "priority", where="admission", submit={"priority": priority})
    for priority in (2**70, -(2**70), "high", 1.5, True, None, NAN)
] + [Malformed("priority", {}, "priority", kind="video", where="admission", submit={"priority": 10**10})]

MALFORMED: list[Malformed] = (
    SIZES
    + TYPES
    + NANS
    + TEXT
    + PATHS
    + UNKNOWN
    + KINDS
    + NESTING
    + SEGMENTS
    + STEPS
    + JOB
    + DEVICE
    + TOKENS
    + PRIORITIES
)
"""Every row of the table."""

SUGGESTIONS = {
    "heigth": "did you mean height?",
    "widht": "did you mean width?",
    "stpes": "did you mean steps?",
    "Height": "did you mean height?",
    "guidance": "did you mean guidance_scale?",
    "true_cfg": "did you mean true_cfg_scale?",
    "parallel.degre": "did you mean parallel.degree?",
    "parallel.stratgy": "did you mean parallel.strategy?",
    "segments[0].modle": "did you mean segments[0].model?",
    "frame": "did you mean frames?",
}
"""Unknown fields and the suggestion their refusal must carry."""
OTHER_KIND = {
    ("image", "frames"): "video",
    ("image", "block_frames"): "video",
    ("image", "fps"): "video",
    ("video", "sampler"): "image",
    ("video", "segments"): "image",
}
"""(kind, field) -> the kind whose field it is: the refusal says so."""

VALID: list[tuple[str, dict[str, Any]]] = [
    ("image", {"steps": 1000, "sampler": "euler"}),  # Euler interpolates its sigmas: 1000 steps are fine
    ("image", {"steps": 999}),  # the built-in DDIM's last step count that stays on its schedule
    ("image", {"steps": 998, "sampler": "dpm++"}),
    (
        "image",
        {"prompt": "rayures bleues et jaunes \u00e9t\u00e9 🌈\x00\n\ttab", "negative_prompt": "ぼやけた"},
    ),
    ("image", {"output_dir": "sorties/été"}),
    ("image", {"device": "cpu"}),
    ("image", {"guidance_scale": 0, "seed": 2**63 - 1}),
    ("video", {"steps": 1000, "block_stride": 1000}),  # flow-matching Euler takes any step count
    ("video", {"fps": 23.976, "guidance_scale": 7.5}),
]
"""Specs near the refusals that stay valid: (kind, change)."""


def representative(rows: list[Malformed], per_mistake: int = 2) -> list[Malformed]:
    """The first ``per_mistake`` rows of every family of mistake, and every row only the service can refuse."""
    chosen: list[Malformed] = []
    for row in rows:
        seen = sum(1 for c in chosen if c.mistake == row.mistake and c.where != "service")
        if row.where == "service" or seen < per_mistake:
            chosen.append(row)
    return chosen
