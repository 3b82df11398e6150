"""The training job's configuration: dataclasses built from the Hydra config (configs/train.yaml)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class VaeStage:
    """Phase 1: the VAE, trained data-parallel (one replica per worker)."""

    steps: int = 600
    """Optimizer steps; 0 skips the phase (the VAE keeps its starting weights)."""
    batch_size: int = 8
    """Images per worker per step."""
    lr: float = 1e-3
    """AdamW learning rate."""
    resolution: int = 64
    """Training image size in pixels (the VAE is convolutional: it decodes any size afterwards)."""
    kl_weight: float = 1e-6
    """Weight of the KL term beside the pixel MSE."""
    sample_posterior: bool = False
    """Decode a posterior sample (a noisy latent) instead of its mean. Off by default: a fresh encoder's
    posterior std is about 1, and that noise hides colour from the decoder for many hundreds of steps."""


@dataclass
class UnetStage:
    """Phase 2: UNet and text encoder, trained as a DeepSpeed pipeline (1F1B) on the frozen VAE's latents."""

    steps: int = 1000
    """Optimizer steps (engine.train_batch calls)."""
    micro_batch: int = 8
    """Samples per micro-batch."""
    micro_batches: int = 4
    """Micro-batches per step per data-parallel replica (DeepSpeed gradient accumulation steps)."""
    lr: float = 1e-3
    """Peak AdamW learning rate."""
    warmup_steps: int = 50
    """Linear learning-rate warmup."""
    resolution: int = 128
    """Training image size in pixels; latents are resolution / 8."""
    cache_size: int = 2048
    """Distinct dataset images encoded once by the VAE and sampled from."""
    caption_dropout: float = 0.1
    """Fraction of captions replaced by the empty prompt (teaches the unconditional branch for CFG)."""
    activation_checkpoint_interval: int = 0
    """Recompute activations every this many layers in backward (0: off)."""
    latents: str = "cache"
    """"cache": `cache_size` images encoded once; "online": fresh images, random flips and a frozen VAE
    forward per micro-batch (the per-step frozen work that bubble filling overlaps)."""
    bubble_filling: bool = False
    """Compute upcoming micro-batches (data, augmentation, frozen VAE, noise, timesteps) in a background
    thread that runs in the pipeline's idle slots instead of in series (parallel/pipeline_bubble_fill.py)."""
    bubble_filling_nice: int = 10
    """OS niceness added to the filling thread: higher yields the CPU to the stage's own compute sooner."""
    gradient_clipping: float = 1.0
    """DeepSpeed's max gradient norm (0: off). Under pipeline parallelism DeepSpeed appears to take the norm
    per stage rather than over the whole model, so with clipping on, S stages differ from 1 stage."""


@dataclass
class DitStage:
    """The video DiT phase (model=builtin-video): transformer and text encoder as a DeepSpeed pipeline (1F1B)
    on latents of the frozen per-frame VAE, flow matching on procedural moving-shape clips."""

    steps: int = 1500
    """Optimizer steps (engine.train_batch calls)."""
    micro_batch: int = 8
    """Clips per micro-batch."""
    micro_batches: int = 4
    """Micro-batches per step per data-parallel replica (DeepSpeed gradient accumulation steps)."""
    lr: float = 1e-3
    """Peak AdamW learning rate."""
    warmup_steps: int = 100
    """Linear learning-rate warmup."""
    resolution: int = 64
    """Frame size in pixels; latent frames are resolution / 8."""
    frames: int = 10
    """Frames per clip: a render's block_frames plus its context frames on both sides (8 + 2 x 1)."""
    cache_size: int = 2048
    """Distinct dataset clips encoded once by the VAE and sampled from."""
    caption_dropout: float = 0.1
    """Fraction of captions replaced by the empty prompt."""
    activation_checkpoint_interval: int = 0
    """Recompute activations every this many layers in backward (0: off)."""
    gradient_clipping: float = 1.0
    """DeepSpeed's max gradient norm (0: off); taken per pipeline stage, as for the UNet phase."""
    sigma_shift: float = 0.0
    """Time shift of the training noise levels (0: the sampler's own `shift`); a larger one trains the
    high-noise steps more, where a sample's layout and motion direction are decided."""
    context_offset: float = 0.0
    """0: every frame of a clip at one noise level. > 0: the first frame at that much less noise and the last
    at twice as much more (unshifted levels), as a render's context frames from the neighbouring blocks are;
    0.1 is one step of a 10-step render."""
    context_clean: float = 0.0
    """Probability per clip and edge that its first (last) 1..context_frames frames sit at a lower (higher)
    noise level than the rest, drawn anywhere down to clean (up to pure noise); 0: off. Excludes context_offset."""
    context_frames: int = 2
    """Most edge frames context_clean moves to their own level (a render's context frames)."""


@dataclass
class TrainConfig:
    """One `tessera train` job."""

    model: str = "builtin-image"
    """Model name (registry) or directory: the architecture to train and where `export` writes."""
    init: str = "random"
    """"random": fresh seeded weights of the built-in architecture; "model": start from the model's weights."""
    workers: int = 2
    """Ray Train workers (one process, one device or CPU slot, one torch thread on CPU each)."""
    stages: int = 2
    """Pipeline stages of the UNet phase; workers / stages is the data-parallel degree."""
    device: str = "auto"
    """"cpu", "cuda" or "auto" (CUDA when the cluster has a GPU per worker)."""
    seed: int = 0
    """Seed of weights, data order, noise and timesteps."""
    run_dir: str = "outputs/train/builtin-image"
    """Checkpoints, metrics.jsonl and the final pipeline go here."""
    resume: bool = False
    """Continue from the last checkpoint in run_dir instead of starting over."""
    checkpoint_every: int = 200
    """Write a checkpoint every this many steps of each phase (and at each phase's end)."""
    max_failures: int = 1
    """Worker-group restarts Ray Train allows when a worker dies; each resumes from the last checkpoint."""
    run_id: str = ""
    """Set by run_training per invocation; checkpoints carry it, so a restarted worker group resumes this run's."""
    export: bool = False
    """Also write the final pipeline into the model's directory (e.g. pipelines/builtin/builtin-image)."""
    log_every: int = 10
    """Print loss and samples/s every this many steps (every step goes to metrics.jsonl)."""
    progress: bool = True
    """Show a progress bar on the driver."""
    dataset_seed: int = 0
    """Seed of the procedural dataset (pipelines/datasets.py)."""
    vae: VaeStage = field(default_factory=VaeStage)
    """Phase 1 settings."""
    unet: UnetStage = field(default_factory=UnetStage)
    """Phase 2 settings."""
    dit: DitStage = field(default_factory=DitStage)
    """Video model settings (a video model trains this phase only: its VAE is the image model's)."""

    def __post_init__(self) -> None:
        if isinstance(self.vae, dict):
            self.vae = VaeStage(**self.vae)
        if isinstance(self.unet, dict):
            self.unet = UnetStage(**self.unet)
        if isinstance(self.dit, dict):
            self.dit = DitStage(**self.dit)
        if self.workers < 1 or self.stages < 1 or self.workers % self.stages:
            raise ValueError(f"parallel.stages: {self.stages} must divide pool.workers {self.workers}")
        if self.init not in ("random", "model"):
            raise ValueError(f"init: expected 'random' or 'model', got {self.init!r}")
        if self.unet.resolution % 32 or self.vae.resolution % 8:
            raise ValueError("unet.resolution must be a multiple of 32 and vae.resolution of 8")
        if self.unet.latents not in ("cache", "online"):
            raise ValueError(f"unet.latents: expected 'cache' or 'online', got {self.unet.latents!r}")
        if self.dit.resolution % 16:
            raise ValueError(f"dit.resolution: must be a multiple of 16, got {self.dit.resolution}")
        if self.dit.sigma_shift < 0:
            raise ValueError(
                f"dit.sigma_shift: must be 0 (the sampler's shift) or positive, got {self.dit.sigma_shift}"
            )
        if not 0 <= self.dit.context_offset <= 0.5:
            raise ValueError(f"dit.context_offset: must be in [0, 0.5], got {self.dit.context_offset}")
        if not 0 <= self.dit.context_clean <= 1:
            raise ValueError(f"dit.context_clean: must be in [0, 1], got {self.dit.context_clean}")
        if self.dit.context_clean > 0 and self.dit.context_offset > 0:
            raise ValueError("dit.context_clean and dit.context_offset: set at most one of them")
        if self.dit.context_clean > 0 and not 1 <= self.dit.context_frames < self.dit.frames / 2:
            raise ValueError(
                f"dit.context_frames: must be at least 1 and under half of dit.frames={self.dit.frames}, "
                f"got {self.dit.context_frames}"
            )
        if self.dit.frames < 1 or self.dit.micro_batch < 1 or self.dit.micro_batches < 1:
            raise ValueError("dit.frames, dit.micro_batch and dit.micro_batches must be at least 1")
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every: must be at least 1, got {self.checkpoint_every}")

    @property
    def data_parallel(self) -> int:
        return self.workers // self.stages

    def to_dict(self) -> dict:
        return asdict(self)
