"""Video jobs: the spec of a frame-pipelined video render (`tessera render job=video ...`).

A video job is queue ticks over a checkpointable state (the blocks in the queue with their latents and
sampler state, and the feature cache), run to its end on ``parallel.degree`` stages. The model is known only
through its family (``pipelines.families``): its strategies, its stage count (``max_stages``) and its own
limits on a render (``video_error``: whole latent frames per block, and whatever its frame plan needs). A frame count that
is not a multiple of the block size is rounded up to the next multiple; the note saying to what is kept
in ``notes`` and printed by the CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from cluster.errors import SpecError
from cluster.jobs.image import Segment
from cluster.jobs.spec import (
    AUTO,
    JobSpec,
    ParallelBase,
    SegmentResult,
    check_sequence_length,
    check_text,
    check_type,
)
from cluster.outputs import job_directory, partial_directory
from parallel.frames.schedule import blocks_finished, split_frames
from parallel.frames.schedule import ticks as schedule_ticks
from pipelines.frame_counts import diffusers_latent_frames
from runtime.jobs.strategies import VIDEO_STRATEGIES, WHOLE_VIDEO

if TYPE_CHECKING:
    from pipelines.families import ModelFamily

PATCH_MODES = ("sync", "displaced")
"""``parallel.patch.config.MODES`` (not imported: validating a spec loads no strategy code)."""
STALE_DTYPES = ("float16", "bfloat16")

MAX_FRAMES = 1_000_000
MAX_BLOCK_FRAMES = 256
"""Frames per block of a block-wise render (strategies none and frames)."""
MAX_WHOLE_VIDEO_FRAMES = 1024
"""Frames of a video rendered as one block (``sequence``, ``patch``): its block is the whole video, so the block bound
does not apply (LTX-Video's longest trained clip is 257 frames), but every frame attends to every other, so its cost
grows with the square of the length; past this the frame pipeline is the plan. The bound holds on every validation,
including the controller's of a spec whose block_frames validation set to its frames."""
MAX_SIDE = 4096
MAX_DECODE_CONTEXT = 64
"""Latent frames of decode context each way at most (16 already decode as the whole video does)."""


def block_directory(output_dir: str | Path, job_id: str) -> Path:
    """Where a service video job keeps its finished blocks (``pipelines.video_blocks``) until it is published:
    ``blocks/`` in its partial output folder."""
    return partial_directory(output_dir, job_id) / "blocks"


@dataclass
class VideoParallelSpec(ParallelBase):
    strategy: str = "frames"
    """"frames" (layer-and-frame pipelining, one stage per worker), "sequence" (the whole video as one sequence,
    split between the workers by diffusers' context parallelism, Ulysses), "patch" (the whole video as one block,
    each worker's forward on a band of rows of every frame), "none" (one worker) or "auto" (with degree "auto":
    for each placement the scheduler picks among the family's frames, sequence and patch, and their degree, the
    plan the cost model predicts renders fastest on the free workers, ``parallel.cost.video``; a sequence or
    patch pick renders the whole video as one block)."""
    degree: int | str = 2
    """Pipeline stages, one worker each; "auto": as many as are free when the job is placed (up to the
    model's transformer blocks and the video's frame blocks), chosen anew when a paused job resumes. With
    "sequence" or "patch": the workers one forward is split over (at least 2; the family checks what must
    divide)."""
    ring: int = 1
    """Strategy "sequence": the workers of ``degree`` that form diffusers' Ring (K/V passed around), the rest
    Ulysses (heads shared out): ulysses x ring = degree. 1: Ulysses over all of them. A family whose forward
    masks the prompt (LTX-Video) refuses Ring, which diffusers runs without masks."""
    mode: str = "sync"
    """Strategy "patch": "sync" (every band's K/V fresh in every step, exact) or "displaced" (DistriFusion: after
    the warmup, the other bands' K/V of the previous step, exchanged while the step computes; approximate)."""
    warmup_steps: int = 1
    """Strategy "patch", displaced mode: synchronous steps before stale K/V are used."""
    stale_dtype: str | None = None
    """Strategy "patch", displaced mode: "float16" or "bfloat16" sends and keeps the stale K/V in that
    precision; None: the model's dtype."""
    kv_source: str = "kv"
    """Strategy "patch": what self-attention exchanges between bands; a video's bands (Wan: rotary positions of
    their own rows on K) exchange keys and values, "kv" only (the field is the image jobs' too, whose parallel
    configs the CLI shares)."""
    cfg: bool = False
    """CFG parallel, with guidance: the conditional branch on half the workers, the unconditional one on the other
    half; partners swap their outputs. For the whole-video strategies (sequence, patch) each half splits its
    forward as the strategy says (``split_degree`` workers); for the frame pipeline each half renders the video
    block-wise on its branch alone, as a pipeline of ``split_degree`` stages whose last stages swap (degree 2: one
    stage each; false: both branches batched through all the stages). Strategy "auto" sets it itself, where the
    cost model predicts the split fastest."""

    @property
    def split_degree(self) -> int | str:
        """The workers one forward is split over: ``degree``, or half of it under CFG parallel."""
        return self.degree // 2 if self.cfg and isinstance(self.degree, int) else self.degree


@dataclass
class VideoSpec(JobSpec):
    kind = "video"
    models = "video"
    unit = "tick"
    output_file = "video.mp4"
    hidden: ClassVar[frozenset[str]] = frozenset({"notes"})

    model: str = "builtin-video"
    """Built-in video model name or a local video pipeline directory."""
    guidance_scale: float | None = None
    """Classifier-free guidance weight; > 1 runs both branches (batched through the stages), <= 1 turns it off
    (HunyuanVideo: the guidance embedded in its distilled model, one branch). None: the model's own default, set at
    validation (the pipeline ``__call__``'s: WanPipeline 5.0, CogVideoX 6, LTX-Video 3, HunyuanVideo 6.0; the
    built-in model 1.0)."""
    guidance_scale_2: float | None = None
    """Wan 2.2's low-noise expert's guidance weight (``WanPipeline``'s ``guidance_scale_2``), at the steps below its
    boundary timestep; None: ``guidance_scale`` at every step, as the pipeline does. Refused for a model of one
    denoiser, and where ``guidance_scale`` runs no unconditional branch."""
    use_dynamic_cfg: bool = False
    """CogVideoX's dynamic classifier-free guidance (``CogVideoXPipeline``'s ``use_dynamic_cfg``): the weight rises
    over the steps by the pipeline's cosine rule. Refused for the other families, and without guidance."""
    max_sequence_length: int | None = None
    """Prompt tokens the text encoder's output is padded or cut to (the pipeline's ``max_sequence_length``). None: its
    ``__call__``'s default (Wan 512, CogVideoX 226, LTX-Video 128, HunyuanVideo 256). Refused for the built-in video
    model, and for a CogVideoX transformer whose position table fixes the length."""
    prompt_template: dict | None = None
    """HunyuanVideo's prompt template (``HunyuanVideoPipeline``'s ``prompt_template``): ``{"template": "...{}...",
    "crop_start": n}``, the text its LLM encoder reads the prompt in and how many leading tokens it crops (without
    ``crop_start`` the pipeline counts the template's own). None: the pipeline's default. Refused for the other
    families."""
    frame_rate: float | None = None
    """LTX-Video's ``frame_rate`` (``LTXPipeline``'s): the frames per second its rotary positions are scaled to in
    time, which changes the video the model makes. None: the pipeline's default (25). The MP4's rate is ``fps``,
    which the model never sees. Refused for the other families."""
    true_cfg_scale: float | None = None
    """HunyuanVideo's true classifier-free guidance (``HunyuanVideoPipeline``'s ``true_cfg_scale``): above 1 with a
    ``negative_prompt`` its branch runs too, both at the embedded ``guidance_scale``, mixed by this weight. None: the
    pipeline's default (1.0, off). The other video families weigh their guidance with ``guidance_scale`` and refuse
    it above 1."""
    height: int = 64
    """Frame height in pixels (a multiple of 16: VAE factor x patch size)."""
    width: int = 64
    """Frame width in pixels (a multiple of 16)."""
    steps: int = 10
    """Denoising steps per block."""
    frames: int = 64
    """Video frames, ``temporal_factor`` per latent frame, or in diffusers' count for a causal VAE (1 + factor x n:
    Wan's 81), which validation turns into Tessera's; rounded up to a multiple of block_frames."""
    block_frames: int = 8
    """Frames per frame block, the unit that moves through the queue."""
    context_frames: int = 1
    """Frames of each neighbour block a block attends to (feature cache); 0 <= it <= block_frames."""
    block_stride: int = 1
    """Steps between consecutive blocks entering the queue, 1 <= it <= steps: 1 is DualParal's queue; more
    starts a block once the previous one is that much cleaner (more motion to continue, fewer blocks in flight)."""
    decode_context: int | None = None
    """Latent frames after a block its VAE decode waits for, for a VAE that keeps no state across blocks: a
    block's frames are held back until that many latent frames after it are denoised. LTX-Video decodes a window
    with as many before it too; HunyuanVideo decodes the whole video's temporal tiles, whose frames equal the whole
    decode's from 4 on. None: the family's default (LTX-Video: 8, HunyuanVideo: 4); 0: nothing held back. Refused
    for a VAE that carries its state from block to block (Wan, CogVideoX)."""
    decode_timestep: float | None = None
    """The timestep a timestep-conditioned VAE decodes at (LTX-Video 0.9.1 and later: LTXPipeline's
    ``decode_timestep``; None: its default, 0; the model cards use 0.03). Refused for any other VAE."""
    decode_noise_scale: float | None = None
    """Noise mixed into the latent before such a decode, drawn per latent frame from ``seed`` (LTXPipeline's
    ``decode_noise_scale``; None: ``decode_timestep``, as there; the model cards use 0.025)."""
    fps: float = 8.0
    """Frame rate of the MP4."""
    image: str = ""
    """Image-to-video: the conditioning first frame, a local image file (required by an image-to-video model,
    refused by any other; "" for none)."""
    parallel: VideoParallelSpec = field(default_factory=VideoParallelSpec)
    """How the render is spread over workers."""
    notes: list[str] = field(default_factory=list)
    """Adjustments made while validating (e.g. the frame count rounded up); not an input."""

    @property
    def blocks(self) -> int:
        return self.frames // self.block_frames

    def validate(self) -> None:
        self.validate_common()
        for name in ("frames", "block_frames", "context_frames", "block_stride"):
            check_type(name, getattr(self, name), int)
        check_type("fps", self.fps, (int, float))
        check_type("parallel.strategy", self.parallel.strategy, str)
        check_type("parallel.degree", self.parallel.degree, (int, str))
        self.check_dtype()
        for name in ("height", "width"):
            value = getattr(self, name)
            if value <= 0 or value % 16 or value > MAX_SIDE:
                raise SpecError(name, f"must be a positive multiple of 16 up to {MAX_SIDE}, got {value}")
        self.check_steps()
        if not 1 <= self.block_stride <= self.steps:
            raise SpecError("block_stride", f"must be in [1, steps={self.steps}], got {self.block_stride}")
        self.check_seed_and_guidance()
        for name in ("guidance_scale_2", "true_cfg_scale"):
            value = getattr(self, name)
            if value is not None:
                check_type(name, value, (int, float))
                if not 0 <= value <= 100:
                    raise SpecError(name, f"must be in [0, 100], got {value}")
        if not 0 < self.fps <= 240:
            raise SpecError("fps", f"must be in (0, 240], got {self.fps}")
        if not 1 <= self.frames <= MAX_FRAMES:
            raise SpecError("frames", f"must be between 1 and {MAX_FRAMES}, got {self.frames}")
        self._check_patch_fields()
        family = self.remember_model("model", self.model)
        requested = self.frames
        factor = self._count_frames_as_tessera(family)
        one_block = (self.frames, 0)
        strategy = self.parallel.strategy
        if strategy in WHOLE_VIDEO:
            if self.frames > MAX_WHOLE_VIDEO_FRAMES:
                raise SpecError(
                    "frames",
                    f"parallel.strategy={strategy} renders the whole video as one block, at most "
                    f"{MAX_WHOLE_VIDEO_FRAMES} frames; got {self.frames} (parallel=frames renders any length)",
                )
            if (self.block_frames, self.context_frames) != one_block:
                self.block_frames, self.context_frames = self.frames, 0
                self.notes.append(
                    f"parallel.strategy={strategy} renders the whole video as one block: block_frames={self.frames}, "
                    "context_frames=0"
                )
        elif not 1 <= self.block_frames <= MAX_BLOCK_FRAMES:
            raise SpecError("block_frames", f"must be between 1 and {MAX_BLOCK_FRAMES}, got {self.block_frames}")
        if not 0 <= self.context_frames <= self.block_frames:
            raise SpecError(
                "context_frames",
                f"must be in [0, block_frames={self.block_frames}], got {self.context_frames}",
            )
        # a neighbour lends whole latent frames (runtime.jobs.video_session); 1, the default, is the nearest one
        if self.context_frames > 1 and self.context_frames % factor:
            covered = -(-self.context_frames // factor)
            self.notes.append(
                f"context_frames: {self.context_frames} rounds up to {covered} whole latent frame"
                f"{'s' if covered > 1 else ''} of this model's VAE ({factor} frames each): each neighbour block lends "
                f"{covered * factor} frames"
            )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.frames, _ = split_frames(self.frames, self.block_frames)
        self.notes.extend(str(w.message) for w in caught)
        if caught and diffusers_latent_frames(requested, factor) is not None:  # rounded up to whole blocks
            self.notes.append(self._exact_blocks_note(family, requested, factor))
        self.check_output_dir()
        self.fill_guidance(family)
        if self.true_cfg_scale > 1.0 and not family.true_cfg:
            raise SpecError(
                "true_cfg_scale",
                f"the {family.name} family weighs its guidance with guidance_scale; leave true_cfg_scale at 1",
            )
        if self.negative_prompt and family.true_cfg and not self.guides():
            self.notes.append(
                f"negative_prompt: the {family.name} pipeline runs it only under true CFG (true_cfg_scale above 1, "
                f"got {self.true_cfg_scale}); ignored, as the pipeline ignores it"
            )
        self._check_cfg_guidance()
        self._check_guidance_options(family)
        self._check_prompt_template(family)
        self._check_sequence_length(family)
        self._check_frame_rate(family)
        self.check_sampler_steps(self.model, "pipeline")  # a video renders with its directory's scheduler
        if self.parallel.strategy == AUTO:
            check_type("parallel.strategy", self.parallel.strategy, str)
        else:
            self.check_plan(family, self.model, VIDEO_STRATEGIES)
        path = self.model_path()
        self.__dict__["_layers"] = family.max_stages(path)
        problem = family.video_error(path, self)  # the family's own limits (whole latent frames per block...)
        if problem is not None:
            raise SpecError(*problem)
        self.notes.extend(family.video_notes(path, self))
        decoded = family.decoded_frames(path, self)
        if decoded is not None and decoded not in (requested, self.frames):
            self.notes.append(
                f"frames: the video's {self.frames} frames in Tessera's count decode to {decoded} (the VAE decodes its "
                f"first latent frame to one frame; diffusers' num_frames={decoded}); the MP4 holds {decoded}"
            )
        self._validate_image(family.takes_image(path))
        self._validate_decode_context(family)
        self._validate_decode_timestep(family.decodes_at_timestep(path))
        # a one-block video of a model whose denoisers take turns (Wan 2.2's experts): one segment each
        self.__dict__["_step_segments"] = family.step_segments(path, self.steps) if self.blocks == 1 else []
        self._validate_degree()

    def _validate_image(self, takes_image: bool) -> None:
        """An image-to-video model needs a readable image; any other model takes none. The path is made absolute,
        so a worker started elsewhere opens the same file."""
        check_type("image", self.image, str)
        if not self.image:
            if takes_image:
                raise SpecError("image", "this model is image-to-video: give the conditioning image's file")
            return
        if not takes_image:
            raise SpecError("image", "this model takes no image (it is not an image-to-video model)")
        from pipelines.condition_image import open_image

        try:
            open_image(self.image)
        except ValueError as err:
            raise SpecError("image", str(err).removeprefix("image: ")) from None
        self.image = str(Path(self.image).resolve())

    def _validate_decode_context(self, family: Any) -> None:
        if self.decode_context is None:
            return
        check_type("decode_context", self.decode_context, int)
        if family.decode_context is None:
            raise SpecError(
                "decode_context",
                f"this model's VAE ({family.name}) carries its state from block to block and takes no decode context; "
                "leave it unset",
            )
        if not 0 <= self.decode_context <= MAX_DECODE_CONTEXT:
            raise SpecError(
                "decode_context", f"must be in [0, {MAX_DECODE_CONTEXT}] latent frames, got {self.decode_context}"
            )

    def _validate_decode_timestep(self, decodes_at_timestep: bool) -> None:
        for name in ("decode_timestep", "decode_noise_scale"):
            value = getattr(self, name)
            if value is None:
                continue
            check_type(name, value, (int, float))
            if not decodes_at_timestep:
                raise SpecError(name, "this model's VAE decoder takes no timestep (not LTX-Video 0.9.1's); leave it unset")
            if not 0 <= value <= 1:
                raise SpecError(name, f"must be in [0, 1], got {value}")

    def _validate_degree(self) -> None:
        par = self.parallel
        if isinstance(par.degree, str) and not par.auto:
            raise SpecError("parallel.degree", f"expected a number of stages or 'auto', got {par.degree!r}")
        if par.strategy == AUTO:
            if not par.auto:
                raise SpecError("parallel.degree", "strategy 'auto' picks the degree too: use parallel.degree=auto")
            return
        if par.strategy == "none" and par.degree != 1:
            raise SpecError(
                "parallel.degree", "strategy 'none' runs on exactly one worker; use parallel=frames"
            )
        if par.strategy in WHOLE_VIDEO:
            if par.auto or par.degree < 2:
                raise SpecError(
                    "parallel.degree",
                    f"strategy {par.strategy!r} splits over a number of workers, at least 2, got {par.degree!r}",
                )
            return
        if par.auto:
            return
        if par.degree < 1:
            raise SpecError("parallel.degree", f"must be at least 1, got {par.degree}")
        stages = par.split_degree  # under CFG parallel (_check_cfg) each guidance branch its own pipeline of half
        what = f"{stages} stages" + (f" (a guidance branch on each {stages} of the {par.degree} workers)" if par.cfg else "")
        if stages > self._layers:
            raise SpecError("parallel.degree", f"{what} exceed the model's {self._layers} transformer blocks")
        if stages > self.blocks:
            raise SpecError(
                "parallel.degree",
                f"{what} exceed the {self.blocks} frame blocks of frames={self.frames} with "
                f"block_frames={self.block_frames}; render more frames or use smaller blocks",
            )

    def _check_patch_fields(self) -> None:
        par = self.parallel
        check_type("parallel.ring", par.ring, int)
        if par.ring < 1 or (par.ring > 1 and par.strategy != "sequence"):
            raise SpecError("parallel.ring", f"a Ring degree >= 2 is for strategy 'sequence' only, got {par.ring}")
        check_type("parallel.cfg", par.cfg, bool)
        if par.cfg:
            self._check_cfg()
        if par.ring > 1 and isinstance(par.degree, int) and par.split_degree % par.ring:
            raise SpecError(
                "parallel.ring",
                f"the Ring degree {par.ring} must divide the {par.split_degree} workers of a forward (ulysses x ring)",
            )
        check_type("parallel.mode", par.mode, str)
        if par.mode not in PATCH_MODES:
            raise SpecError("parallel.mode", f"expected one of {PATCH_MODES}, got {par.mode!r}")
        check_type("parallel.warmup_steps", par.warmup_steps, int)
        if par.warmup_steps < 0:
            raise SpecError("parallel.warmup_steps", f"must be >= 0, got {par.warmup_steps}")
        check_type("parallel.kv_source", par.kv_source, str)
        if par.kv_source != "kv" and par.strategy in ("patch", AUTO):
            raise SpecError(
                "parallel.kv_source",
                f"a video's bands exchange keys and values (their rotary positions are their own rows'): use "
                f"parallel.kv_source=kv, got {par.kv_source!r}",
            )
        if par.stale_dtype is not None and par.stale_dtype not in STALE_DTYPES:
            raise SpecError("parallel.stale_dtype", f"expected None or one of {STALE_DTYPES}, got {par.stale_dtype!r}")

    def _check_cfg(self) -> None:
        """CFG parallel: the frame pipeline or a whole-video strategy with guidance, on an even number of workers (a
        branch per half)."""
        par = self.parallel
        if par.strategy == AUTO:
            raise SpecError(
                "parallel.cfg",
                "strategy 'auto' splits the guidance branches itself where the cost model predicts that fastest: "
                "leave parallel.cfg=false",
            )
        if par.strategy not in (*WHOLE_VIDEO, "frames"):
            raise SpecError(
                "parallel.cfg",
                "CFG parallel splits the workers of the frame pipeline or of a whole-video strategy "
                f"(sequence, patch), got strategy {par.strategy!r}: set parallel.cfg=false",
            )
        if isinstance(par.degree, int) and par.degree % 2:
            raise SpecError(
                "parallel.degree",
                f"CFG parallel runs each guidance branch on half the workers: an even degree, got {par.degree}",
            )

    def _check_guidance_options(self, family: ModelFamily) -> None:
        """``guidance_scale_2`` and ``use_dynamic_cfg``: each only where the model's pipeline takes it, and only with
        guidance to weigh (as the pipelines, which guide only when ``guidance_scale`` is above 1)."""
        check_type("use_dynamic_cfg", self.use_dynamic_cfg, bool)
        options = {
            "guidance_scale_2": (
                self.guidance_scale_2 is not None,
                family.has_second_guidance(self.model_path()),
                "weighs the guidance of a second denoiser's steps (Wan 2.2's low-noise expert); this model has one: "
                "leave it unset",
            ),
            "use_dynamic_cfg": (
                self.use_dynamic_cfg,
                family.dynamic_cfg,
                f"is CogVideoX's (CogVideoXPipeline's rising guidance weight); the {family.name} family has none",
            ),
        }
        for name, (given, offered, why) in options.items():
            if given and not offered:
                raise SpecError(name, why)
            if given and self.guidance_scale <= 1.0:
                raise SpecError(
                    name,
                    f"guidance_scale={self.guidance_scale} runs no unconditional branch for it to weigh: set "
                    "guidance_scale above 1 or leave it unset",
                )

    def _check_sequence_length(self, family: ModelFamily) -> None:
        """``max_sequence_length``: a whole number of tokens, for a model whose pipeline takes one (the family's
        ``video_error`` refuses what its model cannot take, at any length)."""
        tokens = self.max_sequence_length
        if tokens is None:
            return
        check_sequence_length(tokens)
        if not family.takes_sequence_length(self.model_path()):
            raise SpecError(
                "max_sequence_length",
                f"this {family.name} model encodes its prompt with its own tokenizer's length: leave it unset",
            )

    def _check_frame_rate(self, family: ModelFamily) -> None:
        """``frame_rate``: frames per second in (0, 240], for a family whose pipeline takes one."""
        rate = self.frame_rate
        if rate is None:
            return
        check_type("frame_rate", rate, (int, float))
        if not family.frame_rate:
            raise SpecError(
                "frame_rate",
                f"is LTX-Video's; the {family.name} family's pipeline takes none (the MP4's rate is fps)",
            )
        if not 0 < rate <= 240:
            raise SpecError("frame_rate", f"must be in (0, 240], got {rate}")

    def _check_prompt_template(self, family: ModelFamily) -> None:
        """``prompt_template``: only for a family whose pipeline takes one, in the form it reads (a ``template`` with
        one ``{}`` for the prompt, an optional ``crop_start`` of at least 0), checked here rather than in the worker."""
        template = self.prompt_template
        if template is None:
            return
        if not family.prompt_template:
            raise SpecError("prompt_template", f"is HunyuanVideo's; the {family.name} family's pipeline takes none")
        check_type("prompt_template", template, dict)
        unknown = sorted(set(template) - {"template", "crop_start"})
        if unknown:
            raise SpecError("prompt_template", f"takes 'template' and 'crop_start', got {unknown}")
        text = template.get("template")
        check_type("prompt_template.template", text, str)
        check_text("prompt_template.template", text)
        try:
            text.format("prompt")
        except (IndexError, KeyError, ValueError) as err:
            raise SpecError("prompt_template.template", f"must hold one {{}} for the prompt: {err}") from None
        if "{}" not in text:
            raise SpecError("prompt_template.template", "must hold one {} for the prompt")
        crop = template.get("crop_start")
        if crop is not None:
            check_type("prompt_template.crop_start", crop, int)
            if crop < 0:
                raise SpecError("prompt_template.crop_start", f"must be at least 0, got {crop}")

    def _check_cfg_guidance(self) -> None:
        """CFG parallel needs an unconditional branch (``guides``): a weight above 1 (given, or the model's
        default) and, for true CFG (HunyuanVideo), a negative prompt."""
        if not self.parallel.cfg or self.guides():
            return
        weight = self.cfg_weight_field()
        if getattr(self, weight) <= 1.0:
            raise SpecError(
                "parallel.cfg",
                f"{weight}={getattr(self, weight)} runs no unconditional branch to put on other workers: set "
                f"parallel.cfg=false or {weight} above 1",
            )
        raise SpecError(
            "parallel.cfg",
            f"{weight} runs the pipeline's true CFG only with a negative_prompt: give one or set parallel.cfg=false",
        )

    def max_stages(self) -> int:
        """The most stages this video can use: no more than transformer blocks or frame blocks."""
        return min(self._layers, self.blocks)

    def segment_ends(self) -> list[int]:
        """The tick each segment ends at. A video runs as one segment to its end, on one group (paused and moved
        between ticks), except a one-block video of a model whose denoisers take turns (``step_segments``: Wan
        2.2's high- and low-noise experts): one block's ticks are its steps, so each denoiser's steps are a
        segment, checkpointed at its end and placed anew (any workers, any pool the job's ``device`` allows;
        each loads the directory). A longer video keeps both experts in one segment: its queue holds blocks at
        both experts' steps at once."""
        ends, total = [], 0
        for steps in self.__dict__.get("_step_segments", []):
            total += steps
            ends.append(total)
        return ends[:-1] + [self.progress_total()]

    def segment_from(self, tick: int) -> Segment:
        """The segment that runs ``tick`` (``segment_ends``)."""
        ends = self.segment_ends()
        until = next((end for end in ends if end > tick), ends[-1])
        return Segment(self.model, until, self.device)

    def placed(self, model: str, degree: int, choice: dict | None = None) -> VideoSpec:
        """What the stages receive: the model's directory and the stage count this placement runs; for strategy
        "auto", the scheduler's ``choice`` (``strategy`` and ``cfg``; without one, the frame pipeline), a
        whole-video strategy as one block."""
        parallel = replace(self.parallel, degree=degree)
        if parallel.cfg and degree < 2:  # degree=auto with one free worker: both branches batched on it
            parallel.cfg, parallel.strategy = False, "none"
        fields = {
            **self.input_fields(),
            "fps": float(self.fps),
            "guidance_scale": float(self.guidance_scale),
            "true_cfg_scale": float(self.true_cfg_scale),
        }
        if parallel.strategy == AUTO:
            strategy = (choice or {}).get("strategy", "frames")
            parallel.strategy = "none" if degree == 1 else strategy
            if strategy in WHOLE_VIDEO:
                fields.update(block_frames=self.frames, context_frames=0)
            parallel.cfg = bool((choice or {}).get("cfg", False)) and degree > 1
        spec = VideoSpec(**{**fields, "model": self.model_path(), "parallel": parallel, "notes": []})
        spec.__dict__["_layers"] = self.__dict__.get("_layers", 0)
        if choice is not None:
            spec.__dict__["_auto"] = choice
        return spec

    def auto_degree(self, model: str, free: int, rule) -> int:
        """degree=auto: every free worker, up to the stages the video can use (under CFG parallel an even number,
        a pipeline of up to that many stages per guidance branch, or one worker where one is free); with strategy
        "auto", the degree of the plan ``auto_choice`` picks."""
        if self.parallel.strategy == AUTO:
            return self.auto_choice(model, free, rule)["degree"]
        if self.parallel.cfg:  # a pipeline per guidance branch: an even degree, or one worker batching both
            return max(1, 2 * min(free // 2, self.max_stages()))
        return min(free, self.max_stages())

    def auto_choice(self, model: str, free: int, rule) -> dict:
        """Strategy "auto": the plan (strategy, degree, cfg) the cost model predicts renders this video fastest on
        ``free`` workers, among the family's frames, sequence and patch at degrees it accepts (``video_error``),
        the whole-video ones with the guidance branches split too where it runs both, with the predictions it was
        chosen from; the frame pipeline on every usable free worker when the family
        cannot describe its model to the cost model. ``rule``'s ``device``/``link`` name the hardware."""
        key = (free, getattr(rule, "device", "cpu-core"), getattr(rule, "link", "loopback"))
        known = self.__dict__.setdefault("_auto_choices", {})
        if key not in known:
            known[key] = self._choose(free, *key[1:])
        return known[key]

    def _choose(self, free: int, device: str, link: str) -> dict:
        family, path = self.model_family(), self.model_path()
        described = family.cost_model(path, self.dtype)
        candidates = [
            s for s in ("frames", "sequence", "patch") if s in family.strategies and family.plan_error(s, path) is None
        ]  # plan_error: a family may have no such plan for some of its models
        if self.frames > MAX_WHOLE_VIDEO_FRAMES:  # what validation refuses a whole-video job
            candidates = [s for s in candidates if s not in WHOLE_VIDEO]
        if described is None or not candidates:
            degree = min(free, self.max_stages()) if "frames" in family.strategies else 1
            return {"strategy": "frames" if degree > 1 else "none", "degree": degree, "predicted": None}
        from parallel.cost.video import pick_video_plan, rank_video_plans

        if self.decode_context is not None:  # the job's own context of a stateless VAE's decode
            described = replace(described, decode_extra_frames=family.cost_job_decode_extra_frames(path, self.decode_context))
        tokens = family.cost_prompt_tokens(path, self.max_sequence_length)
        if tokens is not None:  # the job's prompt length, not the pipeline's default
            described = replace(described, text_len=tokens)
        factor = family.temporal_factor(path)
        latent, block = self.frames // factor, self.block_frames // factor
        if block == latent:  # one block: priced as rendered, with the frames the family draws before it (padding)
            latent = block = latent + family.lead_latent_frames(path, latent)
        plans = rank_video_plans(
            described,
            self.height,
            self.width,
            latent,
            block,
            self.steps,
            free,
            candidates,
            max_stages=self.max_stages(),
            batch=min(described.batch, 2 if self.guides() else 1),
            mode=self.parallel.mode,
            warmup_steps=self.parallel.warmup_steps,
            device=device,
            link=link,
        )
        plans = [p for p in plans if self._accepts(p.strategy, p.degree, p.cfg)]
        best = pick_video_plan(plans)
        return {
            "strategy": best.strategy,
            "degree": best.degree,
            "cfg": best.cfg,
            "predicted": best.as_dict(),
            "considered": [p.as_dict() for p in plans],
            "device": device,
            "link": link,
        }

    def _accepts(self, strategy: str, degree: int, cfg: bool = False) -> bool:
        """Whether the family renders this video with ``strategy`` on ``degree`` workers, the guidance branches
        split when ``cfg`` (its own checks)."""
        if degree == 1 or (strategy == "frames" and not cfg):
            return True
        parallel = replace(self.parallel, strategy=strategy, degree=degree, cfg=cfg)
        if strategy == "frames":  # a guidance branch per worker: the family's checks on this video as it is
            return self.model_family().video_error(self.model_path(), replace(self, parallel=parallel)) is None
        one_block = replace(self, block_frames=self.frames, context_frames=0, parallel=parallel)
        return self.model_family().video_error(self.model_path(), one_block) is None

    def _exact_blocks_note(self, family: ModelFamily, requested: int, factor: int) -> str:
        """What to say of a diffusers count that whole blocks rounded up: the ``block_frames`` that render exactly its
        latent frames on this model (whole latent frames per block that the family's frame plan takes: CogVideoX's
        blocks take an even number), or that none does."""
        latent = diffusers_latent_frames(requested, factor)
        exact = [
            factor * size
            for size in range(1, latent + 1)
            if latent % size == 0
            and family.video_error(
                self.model_path(),
                replace(self, frames=factor * latent, block_frames=factor * size, context_frames=0, notes=[]),
            )
            is None
        ]
        if not exact:
            return (
                f"block_frames: no block size renders exactly the {latent} latent frames of frames={requested} on this "
                f"model (the {family.name} frame plan refuses every divisor of {latent}); it renders {self.frames}"
            )
        return (
            f"block_frames: for exactly the {latent} latent frames of frames={requested}, set it to one of "
            f"{', '.join(map(str, exact))}"
        )

    def _count_frames_as_tessera(self, family: Any) -> int:
        """``frames`` in Tessera's count (``temporal_factor`` frames per latent frame); the factor. A count of
        diffusers' form for a causal VAE (``1 + factor x n``: Wan's 81, CogVideoX's 49, HunyuanVideo's 129,
        LTX-Video's 161; ``pipelines.frame_counts``) becomes the same latent frames in
        Tessera's count, with a note: the stored job then means the same video whatever reads it. A ``block_frames``
        equal to it (one block, the whole video) is counted alike."""
        factor = family.temporal_factor(self.model_path())
        latent = diffusers_latent_frames(self.frames, factor)
        if latent is not None:
            self.notes.append(
                f"frames: {self.frames} is diffusers' count for this model's VAE (1 + {factor} x {latent - 1}): "
                f"the {latent} latent frames its pipeline makes of num_frames={self.frames}, "
                f"frames={factor * latent} in Tessera's count of {factor} per latent frame"
            )
            if self.block_frames == self.frames:  # one block: the whole video, counted alike
                self.block_frames = factor * latent
            self.frames = factor * latent
        return factor

    def min_workers(self) -> int:
        return 1 if self.parallel.auto else self.parallel.degree

    def check_fits(self, pool_workers: int) -> None:
        if not self.parallel.auto and self.parallel.degree > pool_workers:
            raise SpecError(
                "parallel.degree", f"degree {self.parallel.degree} exceeds the pool's {pool_workers} workers"
            )

    def progress_total(self) -> int:
        return schedule_ticks(self.blocks, self.steps, self.block_stride)

    # --- how the service runs it ------------------------------------------------------------------------
    def units_of(self, state: dict) -> int:
        """The queue tick a checkpoint state was taken at."""
        return state["tick"]

    def preview_latent(self, state: dict) -> Any:
        """The most advanced block still in the queue (the lowest index): (channels, frames, rows, columns);
        None between blocks, or for a family whose frame pipeline keeps its latents packed."""
        latents = state.get("latents") or {}
        if not latents:
            return None
        latent = latents[min(latents)]
        return latent[0] if latent.ndim == 5 else None

    def describe_segment(self, placed: VideoSpec, first: int, until: int) -> str:
        where = "from the start"
        if first:
            kept = blocks_finished(first, self.blocks, self.steps, self.block_stride)
            where = f"from tick {first} ({kept} blocks kept)"
        return f"(video, {placed.parallel.degree} stages, {Path(placed.model).name}), {where} to tick {until}"

    def segment_record(self, placed: VideoSpec, first: int, last: int) -> dict:
        return {"ticks": [first, last], "stages": placed.parallel.degree}

    def run_segment(self, pools, placed: VideoSpec, workers: list[int], job, hooks) -> SegmentResult:
        """The video from ``job.first`` to its end on ``workers``, one stage each. Finished blocks are kept in
        the job's partial output folder as one small H.264 segment each, so they survive a pause, a killed
        worker or a restarted controller; stage 0 joins them into video.mp4 when the last one is in."""
        from runtime.jobs.driver import JobStopped
        from runtime.jobs.video import run_video_render

        if job.resume is not None and job.resume["blocks"] != placed.blocks:
            placed = self._resumable(placed, job.resume)
        partial = partial_directory(self.output_dir, job.id)
        asked: list[bool] = []
        on_unit = self._ticks_for(placed, job, hooks.on_unit)

        def on_tick(done: int) -> bool:
            keep = on_unit(done)
            asked.append(not keep)
            return keep

        # a segment that ends before the video stops there (JobStopped), as a pause does
        until = job.until if job.until < self.progress_total() else None

        try:
            metadata = run_video_render(
                pools,
                placed,
                partial / "video.mp4",
                progress=False,
                ticks_per_call=1,
                indices=workers,
                block_dir=str(block_directory(self.output_dir, job.id)),
                resume=job.resume,
                on_tick=on_tick,
                checkpoint_every=hooks.checkpoint_every,
                on_checkpoint=hooks.on_checkpoint,
                until=until,
            )
        except JobStopped as stopped:
            if any(asked) or stopped.steps_done != job.until:
                raise  # a pause, cancel or stop: the service's
            return SegmentResult({"segment_end_tick": job.until}, checkpoint=stopped.checkpoint)
        if "_auto" in placed.__dict__:
            metadata["auto"] = {k: v for k, v in placed.__dict__["_auto"].items() if k != "considered"}
            metadata["auto"]["considered"] = placed.__dict__["_auto"].get("considered", [])
        return SegmentResult(metadata)

    def _ticks_for(self, placed: VideoSpec, job, on_unit):
        """The job counts its ticks as submitted (``progress_total``, block-wise); a strategy "auto" placement
        that renders the whole video as one block has fewer: its last one is reported as the job's end, so the
        render is not taken for unfinished (paused at its last tick, or recorded short)."""
        total = placed.progress_total()
        if total == job.until:
            return on_unit
        return lambda done: on_unit(job.until if done >= total else done)

    def _resumable(self, placed: VideoSpec, resume: dict) -> VideoSpec:
        """Strategy "auto" picked a layout (one block or many) other than the checkpoint's: the same workers in the
        checkpoint's layout instead (its blocks were rendered so), the first strategy of it the family accepts."""
        degree = placed.parallel.degree
        whole = resume["blocks"] == 1 and self.blocks > 1
        options = [s for s in (WHOLE_VIDEO if whole else ("frames",)) if s in self.model_family().strategies]
        for strategy in options:
            if self._accepts(strategy, degree) and (whole or degree <= self.max_stages()):
                choice = {**placed.__dict__.get("_auto", {}), "strategy": strategy, "resumed_layout": True}
                return self.placed(self.model, degree, choice)
        raise SpecError(
            "parallel.strategy",
            f"the checkpoint was rendered in {resume['blocks']} block(s), which no strategy of this family runs on "
            f"{degree} workers",
        )

    def publish(self, job_id: str, result: SegmentResult, metadata: dict) -> Path:
        """metadata.json joins video.mp4 in the partial folder, which is renamed to outputs/<job-id>/.

        The order is the HTTP stream's (``cluster.http.video_stream``): metadata.json is published (atomically)
        while the blocks are still there, so a reader that finds the blocks gone finds it; the blocks folder is
        renamed away before it is removed, so a segment being cached into it at that moment (by path) cannot
        land in it half-way through the removal."""
        from pipelines.video_blocks import block_frame_counts

        partial = partial_directory(self.output_dir, job_id)
        target = job_directory(self.output_dir, job_id)
        blocks = block_directory(self.output_dir, job_id)
        # where each block lies in the joined video: the stream cuts its segments there once the blocks are gone
        metadata = dict(
            metadata, outputs={"video": str(target / "video.mp4")}, block_frame_counts=block_frame_counts(blocks)
        )
        written = partial / ".metadata.json.partial"
        written.write_text(json.dumps(metadata, indent=2, default=str))
        os.replace(written, partial / "metadata.json")
        removed = partial / ".blocks.removed"
        os.replace(blocks, removed)
        shutil.rmtree(removed)
        os.replace(partial, target)
        return target
