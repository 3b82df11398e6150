"""Layer-and-frame pipelining (DualParal) of a video DiT over a process group.

The transformer's blocks are cut into S stages, one per rank (``frame_partition``); the video latent
is cut into frame blocks that go through the queue of ``frame_schedule``: block b enters at tick b at
the highest noise level and every queued block takes one step per tick. Stage s runs its layers on
the work items in schedule order; since consecutive items are different blocks, the S stages work on
S different blocks at once. Hidden states travel stage to stage, the last stage's model output goes
back to stage 0 (``frame_ring``), which owns the latents, a diffusers scheduler per block (sampler
state per block) and the shared noise template (``frame_noise``); it steps a block when its output
arrives and hands a block that took its last step to ``on_block_done``: blocks leave in order, and
at most ``steps`` blocks are ever alive, whatever the video length.

Neighbouring blocks see each other through the feature cache (``frame_cache``), which each stage keeps
for its own layers. Every stage processes the items in the same order as one worker would, so the
S-stage result equals the 1-worker run of the same schedule (``group=None``) up to float rounding.

Classifier-free guidance (``guidance_scale > 1``) batches the two branches as diffusers' image
pipelines do: stage 0 feeds the block's latent twice, the negative prompt's embeddings first, and
every stage runs its layers on the batch of 2 (each branch keeps its own neighbour context: the
feature cache holds K/V per batch row). The last stage combines ``uncond + g * (cond - uncond)``
before sending, so the message back to stage 0 stays one latent's size. Under CFG parallel two
one-stage pipelines render the video side by side, each with an adapter that runs one branch and swaps
its output with the other's at the head (``pipelines.whole_video.BranchSplit``): this module sees a
batched forward either way.

Stage 0 decodes each finished block (``on_block_done``), or, for a VAE whose frames decode apart, every
stage decodes a share of its frames, or, for a causal VAE, one other stage decodes whole blocks
(``split_decoder``, ``parallel.frames.decode``); either way the decode is counted when the stages are cut
and placed (``partition.stage_plan``).

With ``trace=True`` each stage logs its posts, sends, waits and computes in order (``frame_trace``),
which is how the tests show that transfers overlap compute.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from torch import nn

from parallel.dtype import compute_dtype
from parallel.frames.adapter import FrameAdapterFactory
from parallel.frames.noise import block_noise, block_step_seed, noise_template
from parallel.frames.partition import layer_costs, stage_plan
from parallel.frames.ring import RingChannel, RingSender
from parallel.frames.sampling import (
    SetTimesteps,
    StepFn,
    default_set_timesteps,
    default_step,
    step_with_generator,
    takes_generator,
)
from parallel.frames.schedule import (
    WorkItem,
    blocks_finished,
    queue_at,
    queue_schedule,
    split_frames,
    tick_profile,
)
from parallel.frames.schedule import ticks as schedule_ticks
from parallel.frames.text import Text, batch_guided, check_negative, text_batch, to_model
from parallel.frames.trace import FrameTrace
from parallel.training.partition import agree_on_costs

TAG_HIDDEN, TAG_OUTPUT = 0, 1

BlockSink = Callable[[int, torch.Tensor], None]
"""Receives (block index, finished [1, C, block_frames, H, W] latent) on stage 0, in block order."""


@dataclass
class FramePipelineConfig:
    frames: int = 64
    """Latent frames of the whole video (rounded up to a multiple of ``block_frames``, with a warning)."""
    block_frames: int = 8
    """Latent frames per frame block: the unit that moves through the queue."""
    context_frames: int = 1
    """Frames of each neighbour block a block attends to through the feature cache (0: none)."""
    steps: int = 10
    """Denoising steps every block receives."""
    block_stride: int = 1
    """Ticks between consecutive blocks entering the queue (``frame_schedule``): 1 is DualParal's queue,
    larger starts each block when the one before is that many steps cleaner, ``steps`` one after another."""
    seed: int = 0
    """Seed of the shared noise template."""
    guidance_scale: float = 1.0
    """Classifier-free guidance weight; above 1 both branches run (needs ``negative_text``), else the prompt only."""
    guidance_schedule: Callable[[float], float] | None = None
    """The weight of a step at a timestep, where a family's pipeline varies it (Wan 2.2's low-noise expert's
    ``guidance_scale_2``, CogVideoX's dynamic CFG: ``VideoPipeline.guidance_schedule``); None: ``guidance_scale``."""

    @property
    def guided(self) -> bool:
        return self.guidance_scale > 1.0

    def guidance_at(self, timestep: float) -> float:
        """The guidance weight of a step at ``timestep``."""
        return self.guidance_scale if self.guidance_schedule is None else self.guidance_schedule(timestep)


@dataclass
class StageStats:
    """What one stage did: for metadata.json and the benchmark."""

    rank: int
    """Group-local rank = stage index."""
    layers: tuple[int, int]
    """[first, end) transformer layers this stage runs."""
    items: int = 0
    """Work items (block forwards) run."""
    compute_s: float = 0.0
    """Seconds spent computing."""
    compute_cpu_s: float = 0.0
    """CPU seconds of this thread spent computing: unlike wall time, not inflated by other load."""
    wait_s: float = 0.0
    """Seconds spent waiting for a message."""
    bytes_sent: dict[int, int] = field(default_factory=dict)
    """Bytes sent, by global rank of the peer."""
    cache_peak_bytes: int = 0
    """Largest feature cache held."""
    inflight_peak: int = 0
    """Most sends in flight at once (bounded: memory must not grow with the video)."""


class FramePipeline:
    """One stage's share of a frame-pipelined render; with ``group=None`` the whole render on one worker."""

    def __init__(
        self,
        model: nn.Module,
        config: FramePipelineConfig,
        latent_shape: tuple[int, int, int],
        text: Text,
        make_scheduler: Callable[[], SchedulerMixin],
        on_block_done: BlockSink | None = None,
        group: dist.ProcessGroup | None = None,
        boundaries: list[int] | None = None,
        block_overhead_s: float = 0.0,
        decode_by_frames: bool = False,
        decode_shares: list[int] | None = None,
        decode_stage: int | None = None,
        negative_text: Text | None = None,
        trace: bool = False,
        *,
        make_adapter: FrameAdapterFactory,
        set_timesteps: SetTimesteps | None = None,
        step: StepFn | None = None,
        latent_dtype: torch.dtype | None = None,
    ) -> None:
        """``latent_shape`` is (channels, height, width) of one latent frame; ``text`` the encoded prompt,
        one tensor [1, L, D] or a family's dict of batch-first tensors (``parallel.frames.text``), handed to
        the adapter's ``conditions`` as it is; ``make_scheduler`` a fresh diffusers scheduler (one per block).
        ``block_overhead_s``: seconds to decode one finished block outside the model, counted when cutting
        stages (rank 0's value is the one every rank uses); ``decode_by_frames``: the block's frames decode
        apart, so the cut may give every stage a share of them (``self.decode_shares``, latent frames per
        stage; a caller then sets ``split_decoder``), else one stage decodes them all, the plan's choice or
        ``decode_stage`` (a caller sets ``split_decoder`` when it is not stage 0); ``decode_shares``: that
        split given (with ``boundaries``) instead of planned. ``negative_text`` [1, L, D]: the encoded negative
        prompt (encoded like ``text``), required when ``config.guidance_scale > 1``. ``trace``: log ring and
        compute events in ``self.trace``. ``make_adapter``: the model family's frame plan, which cuts ``model``
        into pieces. ``set_timesteps`` and ``step``: the family's sampler hooks (``parallel.frames.sampling``;
        default: ``scheduler.set_timesteps(steps, device=...)`` and ``scheduler.step(output, t, latent)``).
        ``latent_dtype``: the dtype of a block's initial latent, as the family's diffusers pipeline prepares it
        (float32 under a bfloat16 model for most); None: the model's first parameter's dtype."""
        self.config = config
        self.frames, self.blocks = split_frames(config.frames, config.block_frames)
        self.group = group
        self.rank = dist.get_rank(group) if group is not None else 0
        self.stages = dist.get_world_size(group) if group is not None else 1
        if self.stages > self.blocks:
            raise ValueError(
                f"parallel.degree: {self.stages} stages exceed the {self.blocks} frame blocks of "
                f"frames={self.frames} with block_frames={config.block_frames}; render more frames or "
                "use smaller blocks"
            )
        channels, height, width = latent_shape
        self.block_shape = (channels, config.block_frames, height, width)
        self.adapter = make_adapter(model, self.block_shape, config.context_frames)
        if self.stages > self.adapter.num_layers:
            self.adapter.remove()
            raise ValueError(
                f"parallel.degree: {self.stages} stages exceed the model's {self.adapter.num_layers} "
                "transformer blocks"
            )
        param = next(model.parameters())
        self.device = param.device
        self.latent_dtype = latent_dtype or param.dtype
        """A block's initial latent's dtype (the sampler's steps may keep it or not, as the family's do)."""
        self.wire_dtype = compute_dtype(model)
        """What hidden states cross the ring in: the layers' compute dtype, which a model that keeps some modules
        in float32 does not show in its first parameter (``parallel.dtype``)."""
        self.output_dtype = getattr(self.adapter, "output_dtype", None) or self.wire_dtype
        """What the model output crosses the ring in: the adapter's ``output_dtype`` where it has one."""
        if config.guided:
            if negative_text is None:
                self.adapter.remove()
                raise ValueError(
                    f"negative_text: guidance_scale={config.guidance_scale} runs the unconditional branch "
                    'and needs the encoded negative prompt (encode "" for none)'
                )
            try:
                check_negative(text, negative_text)
            except ValueError:
                self.adapter.remove()
                raise
            text = batch_guided(text, negative_text)  # negative first, as diffusers batches them
        self.batch = text_batch(text)
        """2 with guidance (both branches in one batch), else 1."""
        self.text = to_model(text, self.device, self.wire_dtype)
        """The encoded prompt(s) on the model's device, in its compute dtype (diffusers' pipelines pass
        ``prompt_embeds.to(transformer.dtype)``)."""
        self.trace = FrameTrace() if trace else None
        self.layer_costs: list[float] | None = None
        """Measured seconds per layer and block (embedding and head folded in), when measured."""
        self.decode_shares = [config.block_frames] + [0] * (self.stages - 1)
        """Latent frames of each finished block every stage decodes (stage order, contiguous)."""
        if boundaries is None:
            costs = [1.0] * self.adapter.num_layers
            boundaries = [0, self.adapter.num_layers]
            if self.stages > 1:
                timed = getattr(self.adapter, "without_exchange", self.adapter)  # an adapter's head may swap outputs
                measured = (  # rank 0's are the ones every rank uses (broadcast)
                    layer_costs(timed, self.text, self.batch)
                    if self.rank == 0
                    else [0.0] * self.adapter.num_layers
                )
                agreed = agree_on_costs([*measured, block_overhead_s])
                costs, block_overhead_s = agreed[:-1], agreed[-1]
                boundaries, self.decode_shares = stage_plan(
                    costs,
                    self.stages,
                    tick_profile(self.blocks, config.steps, config.block_stride),
                    block_overhead_s / config.block_frames,
                    config.block_frames,
                    decode_by_frames,
                    decode_stage,
                )
            self.layer_costs = costs
        elif decode_shares is not None:
            self.decode_shares = list(decode_shares)
        if len(self.decode_shares) != self.stages or sum(self.decode_shares) != config.block_frames:
            raise ValueError(f"decode_shares: {self.decode_shares} must split {config.block_frames} frames over {self.stages} stages")
        self.boundaries = list(boundaries)
        self.split_decoder = None
        """``parallel.frames.decode.SplitDecoder`` when stages other than 0 decode (shares of) finished blocks (set
        by the caller, on every stage; stage 0's ``on_block_done`` is then its ``block_done``)."""
        self.layers = range(self.boundaries[self.rank], self.boundaries[self.rank + 1])
        self.make_scheduler = make_scheduler
        self.set_timesteps = set_timesteps or default_set_timesteps
        self.apply_step = step or default_step
        self._step_generator = takes_generator(self.apply_step)
        self.timesteps = self.new_scheduler().timesteps
        self.guidance = [config.guidance_at(float(t)) for t in self.timesteps.cpu()]
        """Each step's guidance weight, read once (a host copy per step would stall a GPU's denoising loop)."""
        self.items = queue_schedule(self.blocks, config.steps, config.block_stride)
        self.position = 0
        self._conditions: dict[int, object] = {}
        self.stats = StageStats(self.rank, (self.layers.start, self.layers.stop))
        self.on_block_done = on_block_done
        self.applied: list[tuple[int, int]] = []
        """(block, step) in the order stage 0 applied the sampler: the queue invariant's witness."""
        self.finished: list[int] = []
        """Blocks in the order they left the queue."""
        # stage 0 state: latents and schedulers of the queued blocks, outputs still to arrive
        self.latents: dict[int, torch.Tensor] = {}
        self.schedulers: dict[int, SchedulerMixin] = {}
        self.outstanding: deque[WorkItem] = deque()
        self.template = noise_template(config.seed, self.block_shape, self.latent_dtype) if self.rank == 0 else None
        self._setup_ring()

    # ---- ring -------------------------------------------------------------------------------
    def _setup_ring(self) -> None:
        self.recv_hidden = self.send_hidden = self.recv_output = self.send_output = None
        if self.stages == 1:
            return
        last = self.stages - 1
        hidden = self.adapter.hidden_shape(self.batch, self._cond(0))
        output = (1, *self.block_shape)  # guided: combined on the last stage before it is sent
        trace = self.trace
        if self.rank > 0:
            self.recv_hidden = RingChannel(
                self.group, self.rank - 1, TAG_HIDDEN, hidden, self.wire_dtype, self.device, trace, "hidden"
            )
        inflight = self.config.steps + 2  # about a tick of slack: absorbs stage 0's bursty decodes
        if self.rank < last:
            self.send_hidden = RingSender(self.group, self.rank + 1, TAG_HIDDEN, inflight, trace, "hidden")
        if self.rank == last:
            self.send_output = RingSender(self.group, 0, TAG_OUTPUT, inflight, trace, "output")
        if self.rank == 0:
            self.recv_output = RingChannel(
                self.group, last, TAG_OUTPUT, output, self.output_dtype, self.device, trace, "output"
            )

    def _take(self, channel: RingChannel, more: bool) -> torch.Tensor:
        started = time.perf_counter()
        message = channel.take()
        if more and channel.pending == 0:
            channel.post()  # the next message's receive overlaps the compute in between
        self.stats.wait_s += time.perf_counter() - started
        return message

    # ---- stage 0: latents and samplers ------------------------------------------------------
    def new_scheduler(self) -> SchedulerMixin:
        """A fresh scheduler for one block, its timesteps set by the family's hook (the same for every block:
        the schedule of a video of one block's size)."""
        scheduler = self.make_scheduler()
        self.set_timesteps(scheduler, self.config.steps, self.block_shape, self.device)
        return scheduler

    def _start_block(self, block: int) -> None:
        scheduler = self.new_scheduler()
        noise = block_noise(self.template, self.config.seed, block).to(self.device)
        self.latents[block] = noise * getattr(scheduler, "init_noise_sigma", 1.0)
        self.schedulers[block] = scheduler

    def _apply(self, item: WorkItem, output: torch.Tensor) -> None:
        scheduler = self.schedulers[item.block]
        args = (output, item.step, self.timesteps, self.latents[item.block])
        if self._step_generator:
            seed = block_step_seed(self.config.seed, item.block)
            self.latents[item.block] = step_with_generator(self.apply_step, scheduler, seed, *args)
        else:
            self.latents[item.block] = self.apply_step(scheduler, *args)
        self.applied.append((item.block, item.step))
        if item.step == self.config.steps - 1:
            latent = self.latents.pop(item.block)
            finish = getattr(self.adapter, "finish_latent", None)  # a family's end of a block (Wan TI2V's image frame)
            if finish is not None:
                latent = finish(item.block, latent)
            del self.schedulers[item.block]
            self.finished.append(item.block)
            if self.on_block_done is not None:
                self.on_block_done(item.block, latent)

    def _settle(self, until: WorkItem | None) -> None:
        """Receive and apply the last stage's outputs in order, up to ``until`` (all when None)."""
        while self.outstanding:
            item = self.outstanding.popleft()
            output = self._take(self.recv_output, more=False)  # posted when the item was forwarded
            self._apply(item, output)
            if item == until:
                return

    def _model_input(self, item: WorkItem) -> torch.Tensor:
        if item.step == 0:
            self._start_block(item.block)
        elif self.stages > 1:
            self._settle(WorkItem(item.tick - 1, item.block, item.step - 1))
        latent = self.latents[item.block]
        scheduler = self.schedulers[item.block]
        if hasattr(scheduler, "scale_model_input"):
            latent = scheduler.scale_model_input(latent, self.timesteps[item.step])
        return latent

    # ---- every stage ------------------------------------------------------------------------
    def _cond(self, step: int) -> object:
        if step not in self._conditions:
            t = self.timesteps[step].reshape(1).to(self.device)
            self._conditions[step] = self.adapter.conditions(t, self.text)
        return self._conditions[step]

    def _run_item(self, item: WorkItem) -> None:
        last = self.stages - 1
        if self.rank == 0:
            hidden = None
            latent = self._model_input(item)
        else:
            latent = None
            hidden = self._take(self.recv_hidden, more=self.position + 1 < len(self.items))
        if self.trace is not None:
            self.trace.add("compute_start", self.position)
        started, started_cpu = time.perf_counter(), time.thread_time()
        cond = self._cond(item.step)
        self.adapter.begin_block(item.block)  # before embed: an image-to-video block 0 embeds its own condition
        if hidden is None:
            hidden = self.adapter.embed(torch.cat([latent] * self.batch) if self.batch > 1 else latent, cond)
        for layer in self.layers:
            hidden = self.adapter.run_layer(layer, hidden, cond)
        output = self._guided(self.adapter.head(hidden, cond), item.step) if self.rank == last else None
        if self.trace is not None:
            self.trace.add("compute_end", self.position)
        self.stats.compute_s += time.perf_counter() - started
        self.stats.compute_cpu_s += time.thread_time() - started_cpu
        self.stats.items += 1
        self.stats.cache_peak_bytes = max(self.stats.cache_peak_bytes, self.adapter.cache.nbytes())
        if self.stages == 1:
            self._apply(item, output)
            return
        sender = self.send_output if self.rank == last else self.send_hidden
        started = time.perf_counter()
        message = output.to(self.output_dtype) if self.rank == last else hidden.to(self.wire_dtype)
        sender.send(message)  # the casts are no-ops where the adapter's dtypes agree
        self.stats.wait_s += time.perf_counter() - started
        self.stats.inflight_peak = max(self.stats.inflight_peak, sender.inflight)
        if self.rank == 0:
            self.outstanding.append(item)
            self.recv_output.post()  # posted now, so the last stage's send never waits on stage 0

    def _guided(self, output: torch.Tensor, step: int) -> torch.Tensor:
        """The model output of both branches [2, ...] -> the guided prediction [1, ...], weighed for ``step``'s
        timestep (``FramePipelineConfig.guidance_at``)."""
        if self.batch == 1:
            return output
        uncond, cond = output.chunk(2)
        return uncond + self.guidance[step] * (cond - uncond)

    @property
    def ticks(self) -> int:
        return schedule_ticks(self.blocks, self.config.steps, self.config.block_stride)

    @property
    def done(self) -> bool:
        return self.position >= len(self.items)

    @torch.no_grad()
    def advance(self, ticks: int | None = None) -> int:
        """Run this stage's items of the next ``ticks`` ticks (all remaining when None); returns the
        number of ticks completed so far. Every stage must be advanced by the same amounts."""
        if self.done:
            return self.ticks
        end_tick = self.ticks if ticks is None else self.items[self.position].tick + ticks
        if self.rank > 0 and self.position == 0:
            self.recv_hidden.post()
        while self.position < len(self.items) and self.items[self.position].tick < end_tick:
            item = self.items[self.position]
            if self.position == 0 or self.items[self.position - 1].tick != item.tick:
                oldest = queue_at(item.tick, self.blocks, self.config.steps, self.config.block_stride)[0]
                self.adapter.cache.evict_before(oldest - 1)
                if self.split_decoder is not None:
                    self._decode_finished(item.tick)
            self._run_item(item)
            self.position += 1
        if self.done and self.rank == 0 and self.stages > 1:
            self._settle(None)
        if self.done:
            self.flush_decodes()
        return min(end_tick, self.ticks)

    def _decode_finished(self, tick: int) -> None:
        """Start of ``tick`` (split decode): stage 0 finishes the block that took its last step in the tick
        before (sending the other stages their shares), the others decode their shares of it."""
        finished = blocks_finished(tick, self.blocks, self.config.steps, self.config.block_stride)
        if self.split_decoder.next_block is None:
            self.split_decoder.next_block = len(self.finished)  # a resumed render starts past its finished blocks
        if self.rank > 0:
            self.split_decoder.catch_up(finished)
            return
        last = WorkItem(tick - 1, finished - 1, self.config.steps - 1)
        if finished and last in self.outstanding:
            self._settle(last)

    def flush_decodes(self) -> None:
        """Split decode: every block finished before the next tick decoded and (stage 0) written, as a
        checkpoint at this boundary needs (stage 0 has settled its outputs first); every stage calls it."""
        if self.split_decoder is None:
            return
        if self.split_decoder.next_block is None:
            self.split_decoder.next_block = len(self.finished)
        tick = self.ticks if self.done else self.items[self.position].tick
        self.split_decoder.flush(blocks_finished(tick, self.blocks, self.config.steps, self.config.block_stride))

    def run(self) -> StageStats:
        """Advance to the end and close; the stage's statistics."""
        self.advance()
        return self.close()

    def close(self) -> StageStats:
        """Wait for the sends in flight and give the model its own attention back."""
        for sender in (self.send_hidden, self.send_output):
            if sender is not None:
                sender.flush()
                self.stats.bytes_sent[sender.global_dst] = sender.bytes_sent
        if self.split_decoder is not None:
            for peer, sent in self.split_decoder.bytes_sent.items():
                self.stats.bytes_sent[peer] = self.stats.bytes_sent.get(peer, 0) + sent
        self.adapter.remove()
        return self.stats
