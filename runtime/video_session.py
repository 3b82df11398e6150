"""A worker's stage of one video render: its model, its FramePipeline, and (stage 0) the MP4 stream.

Plain torch, no Ray. Stage 0 decodes each finished frame block (the per-frame VAE, or Wan's causal VAE
carrying its cache from block to block) and appends it to the MP4 as the block leaves the queue, so no
more than one block of frames is ever held. The task counts video frames; with a VAE that packs
several frames into one latent frame, the frame pipeline gets them divided by that factor.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from parallel.frames.pipeline import FramePipeline, FramePipelineConfig
from pipelines.families import family_of
from pipelines.families.wan.loading import VideoPipeline
from pipelines.video_writer import StreamingMP4Writer
from runtime.video_task import VideoTask


class VideoSession:
    def __init__(
        self,
        pipe: VideoPipeline,
        task: VideoTask,
        group: dist.ProcessGroup | None,
        make_writer: Callable[[VideoTask], Any] | None = None,
    ) -> None:
        """``make_writer``: stage 0's sink for decoded blocks (append/close/abort/frames, as
        StreamingMP4Writer); a service job passes per-block files that survive a pause."""
        self.task = task
        self.pipe = pipe
        factor = pipe.temporal_factor
        config = FramePipelineConfig(
            frames=pipe.latent_frames(task.frames),
            block_frames=pipe.latent_frames(task.block_frames, "block_frames"),
            context_frames=-(-task.context_frames // factor),  # the latent frames covering them
            steps=task.steps,
            block_stride=task.block_stride,
            seed=task.seed,
            guidance_scale=task.guidance_scale,
        )
        started = time.perf_counter()
        text = pipe.encode_prompt(task.prompt)
        guided = task.guidance_scale > 1.0
        negative = pipe.encode_prompt(task.negative_prompt) if guided else None
        self.encode_s = time.perf_counter() - started
        rank = dist.get_rank(group) if group is not None else 0
        make_writer = make_writer or (lambda t: StreamingMP4Writer(t.video_path, t.fps))
        self.writer = make_writer(task) if rank == 0 else None
        self.decode = pipe.block_decoder() if rank == 0 else None
        """Stage 0's decoder of this video's finished blocks, in order (a causal VAE keeps a cache)."""
        self.decode_s = 0.0
        self.decode_cpu_s = 0.0
        latent_shape = pipe.latent_shape(task.height, task.width)
        stages = dist.get_world_size(group) if group is not None else 1
        overhead = self._decode_cost(latent_shape) if rank == 0 and stages > 1 else 0.0
        started = time.perf_counter()
        self.pipeline = FramePipeline(
            pipe.transformer,
            config,
            latent_shape,
            text,
            pipe.make_scheduler,
            on_block_done=self._write_block if self.writer is not None else None,
            group=group,
            block_overhead_s=overhead,
            negative_text=negative,
            make_adapter=family_of(pipe).frame_adapter,
        )
        self.setup_s = time.perf_counter() - started
        self.block_overhead_s = overhead
        self.denoise_s = 0.0

    def _decode_cost(self, latent_shape: tuple[int, int, int]) -> float:
        """Seconds to decode one frame block (stage 0 does it once per block, on top of its layers)."""
        channels, height, width = latent_shape
        frames = self.pipe.latent_frames(self.task.block_frames, "block_frames")
        block = torch.zeros(1, channels, frames, height, width, device=self.pipe.vae.device)
        samples = []
        for _ in range(3):  # the first warms up
            started = time.perf_counter()
            self.pipe.decode_block(block)  # standalone: leaves this video's decoder alone
            samples.append(time.perf_counter() - started)
        return min(samples[1:])

    def _write_block(self, block: int, latent: torch.Tensor) -> None:
        started, started_cpu = time.perf_counter(), time.thread_time()
        self.writer.append(self.decode(latent))
        self.decode_s += time.perf_counter() - started
        self.decode_cpu_s += time.thread_time() - started_cpu

    def advance(self, ticks: int | None = None) -> int:
        """Run the next ``ticks`` queue ticks (all when None); returns the ticks done so far."""
        started = time.perf_counter()
        done = self.pipeline.advance(ticks)
        self.denoise_s += time.perf_counter() - started
        return done

    def finish(self) -> dict:
        """Close the stage (and publish the MP4 on stage 0); this stage's report."""
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
            "blocks": self.pipeline.blocks,
            "frames": self.pipe.video_frames(self.pipeline.frames),
            "latent_frames": self.pipeline.frames,
            "guidance_scale": self.pipeline.config.guidance_scale,
            "encode_s": self.encode_s,
            "setup_s": self.setup_s,
            "denoise_s": self.denoise_s,
            "decode_s": self.decode_s,
            "decode_cpu_s": self.decode_cpu_s,
        }
        if self.writer is not None:
            report["video"] = str(self.writer.close())
            report["frames_written"] = self.writer.frames
            report["blocks_finished"] = self.pipeline.finished
            self.writer = None
        return report

    def close(self) -> None:
        """Abandon the render (the worker's _close_session calls this): no partial MP4 is left."""
        if self.writer is not None:
            self.writer.abort()
            self.writer = None
        self.pipeline.adapter.remove()
