"""A worker's stage of one video render: its model, its FramePipeline, and (stage 0) the MP4 stream.

Plain torch, no Ray. The model is whatever its family's ``load`` returned, used only through
``pipelines.video_pipeline.VideoPipeline`` (its prompt encoding, sampler hooks, frame counts and block
decoder) and the family's frame plan. Stage 0 appends each finished frame block to the MP4 as the block
leaves the queue, so no more than one block of frames is ever held. On one stage it decodes the block itself
(its block decoder: a per-frame VAE, or a causal VAE carrying its cache from block to block). On several
stages with a VAE whose frames decode apart (``frames_decode_apart``), every stage decodes a share of each
block's frames and stage 0 appends them in order (``parallel.frames.decode``); with a causal VAE the plan
puts the whole-block decode on the one stage where it lengthens the render least (``stage_plan``), which
decodes every block with its own block decoder (the cache stays there) and sends the frames to stage 0. The
decoding stage's decoder state is the checkpoint's ``decoder``, restored on whichever stage decodes after a
resume. The spec (the placed video
spec the worker received, ``cluster.jobs.video.VideoSpec``; only its fields are read here) counts video
frames; with a VAE that packs several frames into one latent frame, the frame pipeline gets them divided
by that factor.

With ``parallel.strategy=sequence`` or ``patch`` the video is one block and every worker runs the whole queue
itself (``pipelines.whole_video``): for ``sequence`` the family's ``sequence_adapter`` hands the model's own
forward to diffusers' context parallelism (``parallel.sequence``), which splits each forward's tokens over the
job's group (Ulysses x Ring, ``parallel.ring``), or, for a model diffusers ships no plan for, the family's own
``sequence_plan`` runs it on this worker's row band as ``patch`` does, Ulysses in its attention; for ``patch``
the family's ``band_adapter`` runs that forward on this worker's row band of every frame, the model under its
family's patch plan (``parallel.patch``, sync or displaced), and the bands' outputs are gathered. Every worker then steps the same latent, and stage 0 writes it.

A service job (``open_video_session`` with a ``block_dir``) keeps each finished block as its own MP4
segment (``pipelines.video_blocks``), so that it can stop at a tick boundary and continue elsewhere, and
may start from a checkpoint (``runtime.jobs.video_state``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from parallel.comm.counters import summed
from parallel.frames.decode import SplitDecoder
from parallel.frames.partition import clock_for, per_module
from parallel.frames.pipeline import FramePipeline, FramePipelineConfig
from parallel.patch.cfg import make_cfg_groups
from pipelines.families import family_of
from pipelines.video_pipeline import VideoPipeline, decodable_latent_frames
from pipelines.video_writer import StreamingMP4Writer
from runtime.heap import trim_heap
from runtime.jobs.strategies import WHOLE_VIDEO
from runtime.jobs.video_state import (
    export_decoder_state,
    export_stage_state,
    load_decoder_state,
    load_stage_state,
)

BRANCH_FRAMES_TAG = 7_000_002
"""p2p tag of the decoded frames a CFG partner sends rank 0 (``parallel.patch.cfg.CFG_TAG`` is the outputs')."""


def block_video_frames(
    pipe: VideoPipeline,
    block_frames: int,
    block: int,
    video_latent_frames: int | None = None,
    context: int | None = None,
    lead_frames: int = 0,
) -> int:
    """Frames the family's block decoder returns for block ``block`` of ``block_frames`` latent frames, continuing
    the video: the frames of the latent frames decodable once it is in less those decodable before it
    (``video_frames``, after the video's ``lead_frames`` latent frames, which are not decoded); with a decode
    ``context`` (a VAE decoded in windows) the last ``context`` latent frames received wait for the frames after
    them, up to the video's ``video_latent_frames``."""

    def decodable(blocks: int) -> int:
        received = blocks * block_frames
        if context is None:
            return received
        return decodable_latent_frames(received, video_latent_frames, context)

    def frames(latent_frames: int) -> int:
        return pipe.video_frames(latent_frames - lead_frames) if latent_frames > lead_frames else 0

    return frames(decodable(block + 1)) - frames(decodable(block))


class VideoSession:
    def __init__(
        self,
        pipe: VideoPipeline,
        spec: Any,
        group: dist.ProcessGroup | None,
        video_path: str | None = None,
        make_writer: Callable[[], Any] | None = None,
        decode_stage: int | None = None,
    ) -> None:
        """``video_path``: where stage 0 streams the MP4; ``make_writer``: stage 0's sink for decoded blocks
        instead (append/close/abort/frames, as StreamingMP4Writer); a service job passes per-block files
        that survive a pause. ``decode_stage``: the stage that decodes a causal VAE's whole blocks, forced
        (None: the plan's choice; tests force it rather than depend on measured costs)."""
        spec.fill_guidance(family_of(pipe))  # a spec built in-process, not validated: the model's default weight
        self.spec = spec
        self.pipe = pipe
        factor = pipe.temporal_factor
        frames = pipe.latent_frames(spec.frames)
        one_block = spec.block_frames == spec.frames
        self.lead_frames = pipe.lead_latent_frames(frames) if one_block else 0
        """Latent frames the video renders before its own and never decodes (CogVideoX 1.5's padding of an odd count
        to its temporal patch, as its pipeline pads it; the family refuses such blocks in a video of several)."""
        frames += self.lead_frames
        self.block_latent_frames = (  # one block (block_frames = frames) counts as the video does, diffusers' count too
            frames if one_block else pipe.latent_frames(spec.block_frames, "block_frames")
        )
        """Latent frames per frame block."""
        config = FramePipelineConfig(
            frames=frames,
            block_frames=self.block_latent_frames,
            context_frames=-(-spec.context_frames // factor),  # the latent frames covering them
            steps=spec.steps,
            block_stride=spec.block_stride,
            seed=spec.seed,
        )
        started = time.perf_counter()
        text, negative, config.guidance_scale = pipe.conditioning(
            spec.prompt,
            spec.negative_prompt,
            spec.guidance_scale,
            true_cfg_scale=spec.true_cfg_scale,
            prompt_template=spec.prompt_template,
            max_sequence_length=spec.max_sequence_length,
        )
        config.guidance_schedule = pipe.guidance_schedule(spec)
        if getattr(spec, "image", ""):  # image-to-video: the conditioning image, encoded by the family
            text, negative = pipe.condition_on_image(
                text, negative, spec.image, spec.height, spec.width, config.block_frames
            )
        self.encode_s = time.perf_counter() - started
        rank = dist.get_rank(group) if group is not None else 0
        self.whole = spec.parallel.strategy in WHOLE_VIDEO and group is not None
        """Strategies sequence and patch on a group: each worker runs the whole one-block queue itself (no stages),
        so the frame pipeline gets no group."""
        self.branches = spec.parallel.strategy == "frames" and spec.parallel.cfg and group is not None
        """The frame pipeline under CFG parallel: each half of the workers renders the video block-wise, its guidance
        branch only, as a pipeline of its own stages (one stage each on 2 workers), and the last stages swap every
        model output (``BranchSplit``)."""
        self.cfg = make_cfg_groups(group) if (self.whole or self.branches) and spec.parallel.cfg else None
        """CFG parallel: this worker's guidance branch, its half of the group, its partner (``BranchSplit``)."""
        split = (self.cfg.patch_group if self.cfg is not None else group) if self.whole else None
        self.sequence_group = split if split is not None and dist.get_world_size(split) > 1 else None
        """The group every forward is split over (a branch's half under CFG parallel; None when it is one worker)."""
        self.decodes = not (self.branches and self.cfg.patch_degree > 1 and not self.cfg.is_cond)
        """Whether this worker's branch decodes the finished blocks: under the branch split with stages, the
        conditional branch's pipeline decodes them as it would alone; the unconditional one, which steps the same
        latents, decodes none (with one stage per branch, the partner decodes half: ``branch_share``)."""
        if self.whole:
            group = None
        elif self.branches:  # the branch's own stages (None: one stage)
            group = self.cfg.patch_group if self.cfg.patch_degree > 1 else None
        self.bands = None
        """Strategy patch (or a family's own sequence plan): one ``parallel.patch.PatchHandle`` per model put under
        the plan (``ModelFamily.whole_video_modules``)."""
        self.band_rows = None
        """Strategy patch: the latent rows of every worker's band, [(start, end), ...]."""
        make_writer = make_writer or (lambda: StreamingMP4Writer(video_path, spec.fps))
        self.writer = make_writer() if rank == 0 else None
        self.decode = None
        """The decoding stage's decoder of this video's finished blocks, in order (a causal VAE keeps a cache):
        stage 0's, or the stage the plan gives a causal VAE's whole-block decode."""
        self.decode_s = 0.0
        self.decode_cpu_s = 0.0
        self.heap_trims = 0
        self.heap_trim_s = 0.0
        """Calls of ``runtime.heap.trim_heap`` that trimmed (one per finished block on each CPU stage that decodes or
        writes it) and their seconds."""
        family_context, asked = family_of(pipe).decode_context, getattr(spec, "decode_context", None)
        self.decode_context = family_context if family_context is None or asked is None else asked
        """Latent frames each way a block's decode sees: the job's, else the family's default (None: a VAE with its
        state across blocks, which takes none; the spec refuses one for it)."""
        self.video_latent_frames = config.frames
        latent_shape = pipe.latent_shape(spec.height, spec.width)
        stages = dist.get_world_size(group) if group is not None else 1
        overhead = self._decode_cost(latent_shape) if rank == 0 and stages > 1 else 0.0
        by_frames = stages > 1 and bool(getattr(pipe, "frames_decode_apart", False))
        started = time.perf_counter()
        self.sequence = None
        try:
            self.pipeline = FramePipeline(
                pipe.transformer,
                config,
                latent_shape,
                text,
                pipe.make_scheduler,
                on_block_done=self._write_block if self.writer is not None else None,
                group=group,
                block_overhead_s=overhead,
                decode_by_frames=by_frames,
                decode_stage=decode_stage if stages > 1 else None,
                negative_text=negative,
                make_adapter=self._adapter_factory(pipe, spec, latent_shape),
                set_timesteps=pipe.set_timesteps,
                step=pipe.scheduler_step,
                latent_dtype=pipe.latent_dtype,
            )
        except BaseException:
            self._end_sequence()  # bands the plan put on the model before the pipeline refused
            raise
        if self.sequence_group is not None and spec.parallel.strategy == "sequence" and self.bands is None:
            from parallel.sequence import SequenceConfig, parallelize_sequence

            workers, ring = dist.get_world_size(self.sequence_group), spec.parallel.ring
            cp_group, replicas = (self.sequence_group, 1) if self.cfg is None else (self.cfg.comm.group, 2)
            self.sequence = []  # one handle per model under it (Wan 2.2: each expert)
            try:
                for model in family_of(pipe).whole_video_modules(pipe.transformer):
                    self.sequence.append(
                        parallelize_sequence(
                            model, cp_group, SequenceConfig(ulysses=workers // ring, ring=ring), replicas=replicas
                        )
                    )
            except BaseException:
                self._end_sequence()
                self.pipeline.adapter.remove()
                raise
        shares = self.pipeline.decode_shares
        whole = shares.index(config.block_frames) if config.block_frames in shares else None
        decoding = None if by_frames and whole != 0 else whole  # the stage with self.decode (None: split)
        if decoding is not None and rank == decoding and self.decodes:  # the conditional branch: rank is its stage
            self.decode = self._block_decoder()
        if shares[0] != config.block_frames and self.decodes:
            splitter = SplitDecoder(
                group,
                shares,
                latent_shape,
                (spec.height, spec.width),
                self.pipeline.latent_dtype,
                self.pipeline.device,
                self._decode_share if by_frames else self._decode_whole,
                self._write_frames if self.writer is not None else None,
                None if by_frames else self._decoded_frames,
            )
            self.pipeline.split_decoder = splitter
            if rank == 0:
                self.pipeline.on_block_done = splitter.block_done
        self.branch_share = None
        """CFG parallel with one worker per branch (the frame pipeline's branch split, or a whole-video strategy on 2
        workers) and a VAE whose frames decode apart: the latent frames of each finished block rank 0 decodes; its
        partner, which holds the same latent, decodes the rest and sends them."""
        one_per_branch = self.cfg is not None and self.pipeline.stages == 1 and self.sequence_group is None
        if one_per_branch and getattr(pipe, "frames_decode_apart", False) and config.block_frames > 1:
            self.branch_share = config.block_frames - config.block_frames // 2
            self.pipeline.on_block_done = self._write_with_partner if self.writer is not None else self._decode_for_partner
        self.setup_s = time.perf_counter() - started
        self.block_overhead_s = overhead
        self.denoise_s = 0.0

    def _adapter_factory(self, pipe: VideoPipeline, spec: Any, latent_shape: tuple[int, int, int]) -> Callable:
        """The family's plan for the strategy: its frame plan, or for the whole-video strategies its model's forward
        on the whole video (``patch``: on this worker's band, the model put under the family's patch plan;
        ``sequence``: under diffusers' context parallelism, or, for a model diffusers has no plan for, on this
        worker's band under the family's own sequence plan, ``ModelFamily.sequence_plan``)."""
        family = family_of(pipe)
        if not self.whole and not self.branches:
            return self._plan(family, "frame_adapter", spec)
        factory = (
            self._plan(family, "frame_adapter", spec)
            if self.branches
            else self._whole_video_factory(family, pipe, spec, latent_shape)
        )
        if self.cfg is None:
            return factory
        from pipelines.whole_video import BranchSplit

        return lambda model, block_shape, context_frames: BranchSplit(
            factory(model, block_shape, context_frames), self.cfg
        )

    @staticmethod
    def _plan(family: Any, name: str, spec: Any) -> Callable | None:
        """The family's adapter factory ``name`` (None where it has none) with the job's options for it
        (``ModelFamily.adapter_options``: LTX-Video's ``frame_rate``)."""
        factory = getattr(family, name, None)
        options = family.adapter_options(spec)
        return functools.partial(factory, **options) if factory is not None and options else factory

    def _whole_video_factory(self, family, pipe: VideoPipeline, spec: Any, latent_shape: tuple[int, int, int]):
        """The whole-video plan of one forward's workers (``sequence_group``): the model's forward (one worker of a
        CFG branch, or under diffusers' context parallelism), or on this worker's band under a band plan."""
        if self.sequence_group is None:  # one worker per CFG branch: the model's own forward, whole
            return self._plan(family, "sequence_adapter", spec) or self._plan(family, "band_adapter", spec)
        from parallel.patch.bands import band_bounds
        from parallel.patch.config import PatchConfig
        from parallel.patch.parallelize import parallelize_patch
        from pipelines.whole_video import BandSplit

        par = spec.parallel
        workers = dist.get_world_size(self.sequence_group)
        config = PatchConfig(mode=par.mode, warmup_steps=par.warmup_steps, stale_dtype=par.stale_dtype)
        modules = family.whole_video_modules(pipe.transformer)  # each its own plan (Wan 2.2: both experts)
        if par.strategy == "sequence":
            plans = [family.sequence_plan(module, config, workers) for module in modules]
            if plans[0] is None:  # diffusers' context parallelism, put on the model once the pipeline is built
                return self._plan(family, "sequence_adapter", spec)
        else:
            plans = [family.patch_plan(module, config) for module in modules]
        bounds = band_bounds(latent_shape[1], workers, plans[0].align)
        band_adapter = self._plan(family, "band_adapter", spec)

        def make_adapter(model, block_shape: tuple[int, int, int, int], context_frames: int) -> BandSplit:
            inner = band_adapter(model, block_shape, context_frames)
            self.bands = []
            for module, plan in zip(modules, plans):
                self.bands.append(parallelize_patch(module, self.sequence_group, plan, config))
            self.band_rows = bounds  # the latent rows each worker holds (a model may count its bands in tokens)
            return BandSplit(inner, self.sequence_group, bounds)

        return make_adapter

    def _block_decoder(self, video_latent_frames: int | None = None) -> Callable:
        """The family's decoder of this video's blocks (``video_latent_frames``: another video's length), at the
        job's decode timestep and noise where it sets them (a timestep-conditioned VAE's; the noise from its seed)."""
        options = {
            name: getattr(self.spec, name)
            for name in ("decode_timestep", "decode_noise_scale")
            if getattr(self.spec, name, None) is not None
        }
        if options:
            options["seed"] = self.spec.seed
        if self.lead_frames:
            options["lead_frames"] = self.lead_frames
        if self.decode_context is None:
            return self.pipe.block_decoder(**options)
        frames = self.video_latent_frames if video_latent_frames is None else video_latent_frames
        return self.pipe.block_decoder(video_latent_frames=frames, context=self.decode_context, **options)

    def _decode_cost(self, latent_shape: tuple[int, int, int]) -> float:
        """Seconds to decode one frame block with the family's block decoder, as a block after the first (a
        causal VAE's later blocks decode more frames: Wan's 4n against 1 + 4(n - 1); HunyuanVideo's the whole
        video's temporal tiles, LTX's a window of ``decode_context`` latent frames each way, both holding the first
        blocks back). A decoder of its own: this video's is not touched. Timed once per VAE, block
        shape and context in this worker (``partition.per_module``)."""
        channels, height, width = latent_shape
        frames = self.block_latent_frames
        vae = self.pipe.vae
        held = -(-(self.decode_context or 0) // frames)  # blocks a decode waits for

        def measure() -> float:
            block = torch.zeros(1, channels, frames, height, width, device=vae.device)
            clock = clock_for(vae.device)  # as the layers are measured
            blocks = held + 3  # three calls decode: the first warms up and begins the video, the last ends it
            decode = self._block_decoder(video_latent_frames=blocks * frames)
            samples, total = [], 0.0
            for _ in range(blocks):
                started = clock()
                returned = len(decode(block))
                took = clock() - started
                total += took
                if returned:
                    samples.append(took)
            if len(samples) < 2:  # a video within one temporal tile, held to its end (HunyuanVideo): decoded whole
                return total / blocks
            return min(samples[1:])

        key = ("decode", type(self.pipe).__qualname__, channels, frames, height, width, self.decode_context)
        return per_module(vae, key, measure)

    def _decoded_frames(self, block: int) -> int:
        block_frames = self.pipeline.config.block_frames
        return block_video_frames(
            self.pipe, block_frames, block, self.video_latent_frames, self.decode_context, self.lead_frames
        )

    def _decode_whole(self, latent: torch.Tensor):
        """A whole finished block decoded on this stage, continuing the video (a causal VAE off stage 0)."""
        started, started_cpu = time.perf_counter(), time.thread_time()
        frames = self.decode(latent)
        self.decode_s += time.perf_counter() - started
        self.decode_cpu_s += time.thread_time() - started_cpu
        if self.writer is None:  # stage 0 trims once the block is written (``_write_frames``)
            self._block_finished()
        return frames

    def _decode_share(self, latent: torch.Tensor):
        """A share of a finished block's frames, decoded on this stage (split decode)."""
        started, started_cpu = time.perf_counter(), time.thread_time()
        frames = self.pipe.decode_block(latent)
        self.decode_s += time.perf_counter() - started
        self.decode_cpu_s += time.thread_time() - started_cpu
        if self.writer is None:  # stage 0 trims once the block is written (``_write_frames``)
            self._block_finished()
        return frames

    def _decode_for_partner(self, block: int, latent: torch.Tensor) -> None:
        """CFG parallel, rank 1: the later frames of a finished block decoded and sent to rank 0, which writes; the
        bytes counted as the CFG group's ``frames`` (``report["cfg"]["bytes_sent"]``)."""
        frames = torch.from_numpy(np.ascontiguousarray(self._decode_share(latent[:, :, self.branch_share :])))
        comm, shape = self.cfg.comm, torch.tensor(frames.shape, dtype=torch.int64)
        for tensor in (shape, frames):
            dist.send(tensor, self.cfg.partner, group=comm.group, tag=BRANCH_FRAMES_TAG)
            comm.count("frames", self.cfg.partner, tensor.numel() * tensor.element_size())

    def _write_with_partner(self, block: int, latent: torch.Tensor) -> None:
        """CFG parallel, rank 0: a finished block's first frames decoded here, the rest received from the partner
        (decoded meanwhile), appended in order."""
        own = self._decode_share(latent[:, :, : self.branch_share])
        group, shape = self.cfg.comm.group, torch.empty(4, dtype=torch.int64)
        dist.recv(shape, self.cfg.partner, group=group, tag=BRANCH_FRAMES_TAG)
        theirs = torch.empty(tuple(shape.tolist()), dtype=torch.uint8)
        dist.recv(theirs, self.cfg.partner, group=group, tag=BRANCH_FRAMES_TAG)
        self._write_frames(np.concatenate([own, theirs.numpy()]))

    def _write_frames(self, frames) -> None:
        """Stage 0 when another stage decodes: a finished block's frames (every stage's share, or the decoding
        stage's whole block) appended to the video."""
        self.writer.append(frames)
        self._block_finished()

    def _write_block(self, block: int, latent: torch.Tensor) -> None:
        started, started_cpu = time.perf_counter(), time.thread_time()
        self.writer.append(self.decode(latent))
        self.decode_s += time.perf_counter() - started
        self.decode_cpu_s += time.thread_time() - started_cpu
        self._block_finished()

    def _block_finished(self) -> None:
        """A block is decoded (and, on stage 0, written): its temporaries are freed, so a CPU worker returns the
        heap's free pages to the OS (``runtime.heap``), and its resident set stays flat however long the video."""
        started = time.perf_counter()
        if trim_heap(self.pipeline.device):
            self.heap_trims += 1
            self.heap_trim_s += time.perf_counter() - started

    def snapshot(self, segment_end: bool = False) -> dict[str, Any]:
        """This stage's share of the state at the current tick boundary (all stages at once)."""
        state = export_stage_state(self.pipeline)  # first: stage 0 may finish (and decode) blocks here
        self.pipeline.flush_decodes()  # split decode: the finished blocks' shares decoded and written
        if self.decode is not None:
            state["decoder"] = export_decoder_state(self.decode)
        return state

    def resume(self, state: dict[str, Any]) -> None:
        """Continue from a merged checkpoint state (taken on any stage count)."""
        load_stage_state(self.pipeline, state)
        for handle in self.bands or []:  # stale activations are a cache: the resumed step refills them synchronously
            handle.reset(self.pipeline.position)
        if self.decode is None:  # not the decoding stage
            return
        if state.get("decoder") is not None:  # whichever stage decodes now
            load_decoder_state(self.decode, state["decoder"])
        elif self.decode_context is not None and self.pipeline.finished:
            raise ValueError(
                "checkpoint: it holds no decoder state, and this model's decoder holds finished blocks back "
                "(decode_context): their frames would be lost"
            )

    def result(self) -> None:
        """Stage 0 writes the video itself: nothing travels back."""
        return None

    def advance(self, ticks: int | None = None) -> int:
        """Run the next ``ticks`` queue ticks (all when None); returns the ticks done so far."""
        started = time.perf_counter()
        done = self.pipeline.advance(ticks)
        self.denoise_s += time.perf_counter() - started
        return done

    def _end_sequence(self) -> dict | None:
        """Take diffusers' context parallelism (or the bands) off the (cached) model again; what it sent, by kind
        and peer."""
        if self.bands:
            handles, self.bands = self.bands, None
            report = {
                "bands": self.band_rows,
                "mode": handles[0].config.mode,
                "warmup_steps": handles[0].config.warmup_steps,
                "bytes_sent": summed([handle.bytes_sent.total for handle in handles]),
                "models": len(handles),
            }
            if self.spec.parallel.strategy == "sequence":  # the family's own Ulysses on the bands
                report.update(ulysses=dist.get_world_size(self.sequence_group), ring=1)
            for handle in handles:
                handle.remove()
            return report
        if not self.sequence:
            return None
        handles, self.sequence = self.sequence, None
        for handle in handles:
            handle.remove()
        return {
            "ulysses": handles[0].config.ulysses,
            "ring": handles[0].config.ring,
            "bytes_sent": summed([handle.bytes_sent.total for handle in handles]),
            "notes": [note for handle in handles for note in handle.notes],
            "models": len(handles),
        }

    def finish(self) -> dict:
        """Close the stage (and publish the MP4 on stage 0); this stage's report."""
        sequence = self._end_sequence()
        stats = self.pipeline.close()
        report = {
            "stage": stats.rank,
            "layers": list(stats.layers),
            "items": stats.items,
            "compute_s": stats.compute_s,
            "compute_cpu_s": stats.compute_cpu_s,
            "wait_s": stats.wait_s,
            "bytes_sent_by_peer": stats.bytes_sent,
            "feature_cache_peak_bytes": stats.cache_peak_bytes,
            "boundaries": self.pipeline.boundaries,
            "layer_costs_s": self.pipeline.layer_costs,
            "block_overhead_s": self.block_overhead_s,
            "decode_shares": self.pipeline.decode_shares,
            "blocks": self.pipeline.blocks,
            "frames": self.pipe.video_frames(self.pipeline.frames - self.lead_frames),
            "latent_frames": self.pipeline.frames,
            "guidance_scale": self.spec.guidance_scale,
            "guidance_scale_2": self.spec.guidance_scale_2,
            "true_cfg_scale": self.spec.true_cfg_scale,
            "encode_s": self.encode_s,
            "setup_s": self.setup_s,
            "denoise_s": self.denoise_s,
            "decode_s": self.decode_s,
            "decode_cpu_s": self.decode_cpu_s,
            "heap_trims": self.heap_trims,
            "heap_trim_s": self.heap_trim_s,
        }
        if sequence is not None:
            report["bands" if self.spec.parallel.strategy == "patch" else "sequence"] = sequence
            report["bytes_sent_by_peer"] = {
                peer: sum(by_peer.get(peer, 0) for by_peer in sequence["bytes_sent"].values())
                for peer in {p for by_peer in sequence["bytes_sent"].values() for p in by_peer}
            }
        if self.whole or self.branches:  # the worker's rank in the job's group
            report["stage"] = self.cfg.comm.rank if self.cfg is not None else dist.get_rank(self.sequence_group)
        if self.cfg is not None:  # CFG parallel: this worker's branch and the outputs it swapped with its partner
            report["cfg"] = {"branch": self.cfg.branch, "bytes_sent": self.cfg.comm.bytes_sent().total}
        if self.writer is not None:
            report["video"] = str(self.writer.close())
            report["frames_written"] = self.writer.frames
            report["frames_before"] = getattr(self.writer, "frames_before", 0)  # on disk before a resume
            report["blocks_finished"] = self.pipeline.finished
            self.writer = None
        return report

    def close(self) -> None:
        """Abandon the render (the worker's _close_session calls this): no partial MP4 is left."""
        if self.writer is not None:
            self.writer.abort()
            self.writer = None
        self._end_sequence()
        self.pipeline.adapter.remove()


def open_video_session(
    pipe: VideoPipeline,
    spec: Any,
    resume: dict[str, Any] | None = None,
    video_path: str | None = None,
    block_dir: str | None = None,
) -> VideoSession:
    """The worker's stage of a video render (``Worker.begin``'s opener for video jobs). With ``block_dir``
    (a service job) stage 0 keeps finished blocks there as files and the render may continue from
    ``resume``, the merged state of a checkpoint."""
    group = dist.group.WORLD if dist.is_initialized() else None
    make_writer = None
    if block_dir is not None:
        from pipelines.video_blocks import BlockFileWriter

        first = resume["blocks_finished"] if resume else 0
        blocks = spec.frames // spec.block_frames

        def make_writer() -> BlockFileWriter:
            return BlockFileWriter(block_dir, video_path, spec.fps, blocks, first_block=first)

    session = VideoSession(pipe, spec, group, video_path, make_writer)
    if resume is not None:
        session.resume(resume)
    return session

