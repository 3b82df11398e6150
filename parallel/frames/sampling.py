"""How the frame pipeline drives a block's scheduler: the model family's hooks, or diffusers' defaults.

Stage 0 makes a fresh diffusers scheduler per frame block. Two things about it are the family's, not the
pipeline's: how the scheduler gets its timesteps (flow-matching pipelines pass ``mu``, ``sigmas`` or a shift
computed from the video's size) and how one step is applied (CogVideoX's DPM scheduler takes the previous
step's predicted original sample and the previous timestep). A family's video pipeline object supplies both
(``pipelines.video_pipeline``); without them the frame pipeline does what diffusers' simplest loop does.

Every block gets its timesteps from ``block_shape``, the latent of one block: a multi-block video uses, per
block, the schedule its pipeline would use for a video of one block's size, so every block has the same
schedule (the queue steps blocks in lock-step at one shared list of timesteps).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin

SetTimesteps = Callable[[SchedulerMixin, int, tuple[int, int, int, int], torch.device], None]
"""(fresh scheduler, steps, block latent shape (C, F, H, W), device): set its timesteps in place."""

StepFn = Callable[[SchedulerMixin, torch.Tensor, int, torch.Tensor, torch.Tensor], torch.Tensor]
"""(the block's scheduler, guided model output, step index, the timesteps, latent) -> the next latent.
A scheduler with state beyond diffusers' own keeps it as tensor or scalar attributes of the scheduler, so a
checkpoint (``pipelines.render_state.scheduler_state``) carries it. A hook with a ``generator`` keyword (a
stochastic scheduler, as diffusers' ``prepare_extra_step_kwargs`` asks ``scheduler.step``) also gets the block's
own ``torch.Generator``: seeded from (seed, block) (``parallel.frames.noise.block_step_seed``), its state kept
on the block's scheduler between steps (``RNG_STATE``), so a resumed block draws what it would have drawn."""

RNG_STATE = "frame_rng_state"
"""The scheduler attribute holding its block's generator state (a uint8 tensor: checkpointed with it)."""


def takes_generator(step: Callable) -> bool:
    """Whether a step hook asks for the block's generator."""
    import inspect

    return "generator" in inspect.signature(step).parameters


def step_with_generator(
    step: Callable, scheduler: SchedulerMixin, seed: int, *args: torch.Tensor | int
) -> torch.Tensor:
    """Call ``step(scheduler, *args, generator=...)`` with the block's generator, its state kept on ``scheduler``."""
    generator = torch.Generator()
    state = getattr(scheduler, RNG_STATE, None)
    if state is None:
        generator.manual_seed(seed)
    else:
        generator.set_state(state.cpu())  # a checkpoint loads it onto the model's device
    latent = step(scheduler, *args, generator=generator)
    setattr(scheduler, RNG_STATE, generator.get_state())
    return latent


def default_set_timesteps(
    scheduler: SchedulerMixin, steps: int, block_shape: tuple[int, int, int, int], device: torch.device
) -> None:
    """``scheduler.set_timesteps(steps, device=device)``: what the frame pipeline always did."""
    scheduler.set_timesteps(steps, device=device)


def default_step(
    scheduler: SchedulerMixin, output: torch.Tensor, index: int, timesteps: torch.Tensor, latent: torch.Tensor
) -> torch.Tensor:
    """``scheduler.step(output, t, latent)``, diffusers' ordinary step."""
    return scheduler.step(output, timesteps[index], latent, return_dict=False)[0]
