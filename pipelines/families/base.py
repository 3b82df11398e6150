"""A model family: everything Tessera knows about one kind of diffusers pipeline, in one object.

The runtime and the service never test a model's class name: they look its family up
(``pipelines.families.family_for_dir``, keyed by the diffusers classes in ``model_index.json``) and call
it. A family's fields are plain data and its directory checks read JSON only, so validating a job at
submit imports no diffusers; what runs the model imports diffusers when it is called, and the family's
parallel plans live in its own sub-modules (``patch``, ``frames``, ``training``), which build on the
generic mechanics of ``parallel/``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pipelines.errors import ModelDirectoryError

if TYPE_CHECKING:
    import torch

    from parallel.cost.models import ModelSpec
    from parallel.patch.config import PatchConfig
    from parallel.patch.parallelize import PatchPlan


VAE_SCALING = ("scaling_factor", "shift_factor", "latents_mean", "latents_std")
"""The VAE config fields that map its latent to the denoiser's (a pipeline scales, shifts or normalises the latent it
encodes by them): a job's segments must share them, as their denoisers step one latent."""


def call_default(pipe: Any, name: str) -> Any:
    """The default of argument ``name`` of the pipeline's ``__call__``: what calling it directly uses, where its
    ``encode_prompt``'s own default may differ."""
    import inspect

    return inspect.signature(type(pipe).__call__).parameters[name].default


def call_option(pipe: Any, name: str, value: Any) -> Any:
    """A job's value of the pipeline ``__call__``'s argument ``name`` (``ModelFamily.encode_options``), or, when the job
    leaves it unset (None), the ``__call__``'s default."""
    return call_default(pipe, name) if value is None else value

@dataclass
class Conditioning:
    """A prompt encoded for one family's denoiser: its conditioning inputs per guidance branch."""

    family: ModelFamily
    """The family that encoded it (and knows how its denoiser takes it)."""
    positive: dict[str, Any]
    """The denoiser's conditioning inputs for the prompt, by keyword, batch of one."""
    negative: dict[str, Any] | None
    """The same for the negative prompt; None without classifier-free guidance."""
    guidance_scale: float
    """Classifier-free guidance weight; guidance is off at 1.0 or below, as in diffusers."""
    image_size: tuple[int, int] | None = None
    """(height, width) in pixels, for denoisers conditioned on the resolution (PixArt at 1024)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Whatever else the family's denoiser call needs, the same for both branches."""

    @property
    def guided(self) -> bool:
        return self.guidance_scale > 1.0

    def batched(self) -> dict[str, Any]:
        """Both branches' inputs in one batch (negative first), as diffusers batches them."""
        if not self.guided:
            return self.positive
        return {key: _concat(self.negative[key], value) for key, value in self.positive.items()}

    def branch(self, conditional: bool) -> dict[str, Any]:
        """One branch's inputs (CFG parallel runs the two on different workers)."""
        return self.positive if conditional else self.negative


@dataclass(frozen=True)
class SequenceShape:
    """What sequence parallelism (diffusers' context parallelism) splits in one render, read from the configs."""

    image_tokens: int
    """Image tokens the denoiser attends over at the render's size; they grow with height and width."""
    text_tokens: int
    """Text tokens the model's context-parallel plan splits beside them (a joint-attention DiT's prompt);
    0 when it splits none."""
    heads: int
    """Attention heads per layer: Ulysses hands each of its workers a share of them."""
    masked_text: bool = False
    """Whether a render's text may carry an attention mask (a prompt padded in the worker to split evenly),
    which diffusers' Ring attention cannot take: its Ring workers then run as Ulysses (the same result), so the
    heads must split between all of a branch's workers whatever the Ring degree."""


def _concat(negative: Any, positive: Any) -> Any:
    import torch

    if positive is None:
        return None
    if isinstance(positive, dict):
        return {key: _concat(negative[key], value) for key, value in positive.items()}
    return torch.cat([negative, positive])


def without_learned_sigma(model: torch.nn.Module, output: torch.Tensor) -> torch.Tensor:
    """A transformer with learned sigma (twice its input channels out) predicts the noise (or flow) and a
    variance: the sampler takes the first half, as diffusers' PixArt and Sana pipelines do."""
    if model.config.out_channels // 2 == model.config.in_channels:
        return output.chunk(2, dim=1)[0]
    return output


class ModelFamily:
    """The defaults every family shares; a family subclasses it and sets its fields."""

    name: str = ""
    """Short name, in errors and metadata ("sd", "pixart", "wan")."""
    job: str = "image"
    """The job kind that renders it: "image" or "video"."""
    pipelines: tuple[str, ...] = ()
    """diffusers pipeline classes (model_index.json's ``_class_name``) the family serves."""
    denoiser: str = "unet"
    """The pipeline component that predicts the noise: "unet" or "transformer"."""
    denoisers: tuple[str, ...] = ()
    """diffusers classes of that component (its config.json's ``_class_name``) the family is written for."""
    samplers: tuple[str, ...] = ("pipeline", "ddim", "euler", "dpm++")
    """Samplers (``pipelines.samplers``) that fit the model's noise schedule; the first is the default."""
    strategies: tuple[str, ...] = ("none",)
    """Parallel strategies the family has a plan for ("none" runs the whole model on one worker)."""
    compiled_blocks: tuple[str, ...] = ()
    """Block classes ``compile=true`` compiles where diffusers names none for the denoiser's class."""
    cache_modes: tuple[str, ...] = ("none",)
    """Step-cache modes (``parallel.cache``) that fit the family's denoiser ("none": every step in full)."""
    stack_layers: tuple[str, ...] = ("num_layers",)
    """The transformer denoiser's config fields that count its blocks (``transformer_blocks``): one per block list
    (``transformer_blocks``, Flux's ``single_transformer_blocks``...)."""
    decode_context: int | None = None
    """A video VAE that keeps no state across blocks and sees frames on both sides (LTX-Video's): the latent frames
    of context each way a block's decode takes by default (``pipelines.video_pipeline``); None: the VAE carries
    its state from block to block (or decodes frames apart), and a job's ``decode_context`` is refused."""
    call_guidance: ClassVar[dict[str, tuple[float, float]]] = {}
    """(guidance_scale, true_cfg_scale) by pipeline class of ``pipelines``: its ``__call__``'s defaults, which a job
    leaving them unset takes (``guidance_defaults``; None there, as QwenImagePipeline's ``guidance_scale``, is 1.0).
    Written here rather than read from diffusers at submit, where importing a pipeline class takes seconds and
    validation loads no model code; ``tests/test_guidance_defaults.py`` holds every entry to diffusers' signature.
    A class not listed (Tessera's own ``TesseraVideoPipeline``) takes (1.0, 1.0)."""
    encode_options: tuple[str, ...] = ()
    """The arguments of the family's pipelines' ``__call__`` that shape how the prompt is encoded and that an image job
    may set (``max_sequence_length``, Sana's ``complex_human_instruction``): ``encode`` takes them by keyword, None
    meaning the ``__call__``'s default (``call_option``); a job setting one its model's family lacks is refused."""
    true_cfg: bool = False
    """Whether the family's classifier-free guidance over a negative prompt is weighed by the job's
    ``true_cfg_scale`` (which ``encode`` then takes as a keyword) rather than by ``guidance_scale``: Flux, whose
    guidance-distilled denoiser takes ``guidance_scale`` as an input, Qwen-Image, whose pipeline does, and
    HunyuanVideo, whose guidance is embedded likewise."""

    def __repr__(self) -> str:
        return f"<model family {self.name}>"

    # --- a pipeline directory, at submit: JSON only --------------------------------------------
    def check_dir(self, path: Path, index: dict) -> None:
        """Refuse (ModelDirectoryError) a directory of this family that Tessera cannot render."""

    def component_config(self, path: str | Path, component: str) -> dict:
        """A component's config.json (``{}`` when the pipeline has no such component)."""
        config = Path(path) / component / "config.json"
        try:
            return json.loads(config.read_text()) if config.is_file() else {}
        except json.JSONDecodeError as err:
            raise ModelDirectoryError(f"{config} is not valid JSON: {err}") from err

    def tokenizer_limit(self, path: str | Path, default: int) -> int:
        """The ``model_max_length`` of the pipeline's ``tokenizer`` (its tokenizer_config.json), ``default`` when it
        says none: what a family's prompt length at submit is read from, without loading the tokenizer."""
        config = Path(path) / "tokenizer" / "tokenizer_config.json"
        return int(json.loads(config.read_text()).get("model_max_length", default)) if config.is_file() else default

    def plan_error(self, strategy: str, path: str | Path) -> str | None:
        """Why the family cannot run ``strategy`` on the model at ``path``; None when it has a plan."""
        if strategy in self.strategies:
            return None
        return f"the {self.name} family has no {strategy!r} plan (it runs {', '.join(self.strategies)})"

    def cache_error(self, path: str | Path, cache) -> tuple[str, str] | None:
        """(field, why) when the model at ``path`` cannot take the job's ``cache`` section; None when it can."""
        from parallel.cache.config import stack_blocks_error

        if cache.mode not in self.cache_modes:
            return "cache.mode", f"the {self.name} family has no {cache.mode!r} cache (it has {', '.join(self.cache_modes)})"
        blocks = self.transformer_blocks(path)
        problem = None if blocks is None else stack_blocks_error(cache.mode, blocks, f"{Path(path).name}'s denoiser")
        return None if problem is None else ("cache.mode", problem)

    def transformer_blocks(self, path: str | Path) -> int | None:
        """The transformer blocks of the denoiser at ``path``, read from its config.json: the sum of its
        ``stack_layers``, as many as ``parallel.cache.first_block.transformer_blocks`` finds in the loaded model;
        None for a UNet, or a config that names none of them."""
        config = self.component_config(path, self.denoiser)
        if self.denoiser != "transformer" or not any(key in config for key in self.stack_layers):
            return None
        return sum(int(config.get(key) or 0) for key in self.stack_layers)

    def repeated_blocks(self, denoiser_class: type | None) -> list[str]:
        """The block classes ``compile=true`` compiles in a denoiser of this class: those diffusers names
        (``_repeated_blocks``, what its regional compilation takes), else the family's ``compiled_blocks``."""
        return list(getattr(denoiser_class, "_repeated_blocks", None) or self.compiled_blocks)

    def denoiser_class(self, path: str | Path) -> type | None:
        """The diffusers class of the denoiser at ``path`` (None: diffusers has no class of that name)."""
        import diffusers

        return getattr(diffusers, self.component_config(path, self.denoiser).get("_class_name", ""), None)

    def prepare_cache(self, model) -> None:
        """Make the denoiser's blocks known to the cache hooks (diffusers' block registry), where they are not."""

    def sampler(self, name: str) -> str:
        """The sampler a job asks for, or the family's default (its first) for ""."""
        return name or self.samplers[0]

    def guidance_defaults(self, path: str | Path) -> dict[str, float]:
        """The guidance weights a job on the model at ``path`` leaves unset takes, so that it renders what calling
        the pipeline with its defaults renders: ``call_guidance`` of the directory's pipeline class
        (model_index.json's ``_class_name``), a built-in model's own, (1.0, 1.0) for a class not listed."""
        from pipelines.builtin import builtin_at

        builtin = builtin_at(path)
        if builtin is not None:
            return {"guidance_scale": builtin.guidance_scale, "true_cfg_scale": 1.0}
        index = json.loads((Path(path) / "model_index.json").read_text())
        guidance, true_cfg = self.call_guidance.get(index.get("_class_name", ""), (1.0, 1.0))
        return {"guidance_scale": guidance, "true_cfg_scale": true_cfg}

    def band_alignment(self, path: str | Path) -> int:
        """Latent rows a patch band must be a multiple of (families with a patch plan)."""
        raise NotImplementedError(f"the {self.name} family has no patch plan")

    def band_error(self, path: str | Path, height: int, degree: int) -> tuple[str, str] | None:
        """(field, why) when a ``height``-pixel render cannot be cut into ``degree`` bands of whole
        ``band_alignment`` latent rows (at ``latent_factor`` pixels per row); None when it can."""
        from parallel.patch.bands import too_short_for_bands

        why = too_short_for_bands(height, height // self.latent_factor(path), degree, self.band_alignment(path))
        return None if why is None else ("parallel.degree", why)

    def whole_video_split_error(self, path: str | Path, spec: Any) -> tuple[str, str] | None:
        """(field, why) when a one-block video cannot be split over ``parallel.degree`` workers by the family's
        band-split plans: ``patch`` (row bands), or a ``sequence_plan`` of its own (Ulysses over the same row bands,
        ``parallel.patch.ulysses``: the heads must divide by the workers, no Ring, exact); None when it can, or
        when the strategy is neither."""
        par = spec.parallel
        degree = par.split_degree  # under CFG parallel, each branch's half
        if par.strategy not in ("patch", "sequence") or not isinstance(degree, int) or degree < 2:
            return None
        if par.strategy == "sequence":
            heads = int(self.component_config(path, self.denoiser).get("num_attention_heads", 0))
            if heads % degree:
                return (
                    "parallel.degree",
                    f"sequence parallelism shares the model's {heads} attention heads out; {degree} does not "
                    "divide them",
                )
            if getattr(par, "ring", 1) > 1:
                return "parallel.ring", f"the {self.name} family's own Ulysses has no Ring: use parallel.ring=1"
            if par.mode != "sync":
                return "parallel.mode", f"the {self.name} family's Ulysses is exact: it has only the sync mode"
        return self.band_error(path, spec.height, degree)

    def size_error(self, path: str | Path, height: int, width: int) -> tuple[str, str] | None:
        """(field, why) when the model at ``path`` cannot render a ``height`` x ``width`` image (a size its
        pipeline refuses); None when it can."""
        return None

    def whole_units_error(
        self, path: str | Path, height: int, width: int, factor: int, per: int, what: str
    ) -> tuple[str, str] | None:
        """(field, why) when ``height`` or ``width`` is not whole units of ``factor`` x ``per`` pixels: the VAE's
        ``factor`` times ``per`` latent pixels a unit (``what``: a patch, a packed token); None when both are."""
        multiple = factor * per
        for name, pixels in (("height", height), ("width", width)):
            if pixels % multiple:
                return name, (
                    f"must be a multiple of {multiple} for the {self.name} model at {path} (the VAE's factor "
                    f"{factor} x {what}), got {pixels}"
                )
        return None

    def steps_error(self, path: str | Path, sampler: str, steps: int) -> str | None:
        """Why ``sampler`` (a name of ``pipelines.samplers``) cannot take ``steps`` steps on the training schedule of
        the model at ``path``, where diffusers' scheduler would fail in the worker; None when it can. Read from
        JSON (``pipelines.sampler_steps``); a family that sets its timesteps otherwise overrides it."""
        from pipelines.sampler_steps import scheduler_config, steps_error

        return steps_error(sampler, scheduler_config(path), steps)

    def latent_factor(self, path: str | Path) -> int:
        """Image pixels per latent row and column (the VAE's downsampling): a band's latent rows are counted
        at this factor. An ``AutoencoderKL``'s, as its pipelines compute ``vae_scale_factor`` (2 per block after the
        first: 8 for the usual 4 blocks, which a VAE config without ``block_out_channels`` is taken to have)."""
        blocks = self.component_config(path, "vae").get("block_out_channels")
        return 2 ** (len(blocks) - 1) if blocks else 8

    def sequence_shape(
        self, path: str | Path, height: int, width: int, prompt_tokens: int | None = None
    ) -> SequenceShape:
        """The tokens and heads sequence parallelism splits for a ``height`` x ``width`` render (families with
        "sequence" in ``strategies``): each split sequence must divide evenly between its workers.
        ``prompt_tokens``: the job's ``max_sequence_length`` (None: the pipeline's default)."""
        raise NotImplementedError(
            f"the {self.name} family does not say how many tokens its model splits (ModelFamily.sequence_shape)"
        )

    def sequence_conditioning(
        self, cond: Conditioning, workers: int, apart: bool
    ) -> tuple[Conditioning, str | None]:
        """The conditioning a sequence-parallel render runs on when its plan splits each forward's tokens between
        ``workers`` (``apart``: CFG parallel, one branch per forward), and why Ring attention could not run it
        exactly (None when it can). Called in the worker, after ``encode``: a family whose text length is known
        only then makes it split evenly here. Default: the conditioning as encoded (its splits were checked at
        submit, ``sequence_shape``)."""
        return cond, None

    def temporal_factor(self, path: str | Path) -> int:
        """Video frames per latent frame of a video family's VAE at ``path`` (read from JSON); 1 for a VAE that
        decodes frame by frame."""
        return 1

    def video_error(self, path: str | Path, spec: Any) -> tuple[str, str] | None:
        """(field, why) when the model at ``path`` cannot render the video ``spec`` (a ``cluster.jobs.video``
        spec, its frame counts already rounded to whole blocks); None when it can. Default: a block must hold
        whole latent frames (``block_frames`` a multiple of ``temporal_factor``). A family whose frame plan needs
        more (a temporal patch: an even number of latent frames per block) checks it here, at submit."""
        factor = self.temporal_factor(path)
        if spec.block_frames % factor:
            return (
                "block_frames",
                f"this model's VAE packs {factor} frames into one latent frame; block_frames must be a "
                f"multiple of {factor}, got {spec.block_frames}",
            )
        return None

    def cost_prompt_tokens(self, path: str | Path, max_sequence_length: int | None) -> int | None:
        """The prompt tokens the model at ``path`` attends to for a job's ``max_sequence_length`` (its cost model's
        ``text_len``, which ``cost_model`` gives at the pipeline's default length); None: the description's own.
        Default: the job's length where the family takes one, the text padded or cut to it."""
        if max_sequence_length is None:
            return None
        takes = "max_sequence_length" in self.encode_options or self.takes_sequence_length(path)
        return max_sequence_length if takes else None

    def decoded_frames(self, path: str | Path, spec: Any) -> int | None:
        """The frames the model at ``path`` decodes the valid video ``spec`` to (read from JSON at submit, as the
        loaded pipeline's ``video_frames`` counts them); None when the family does not say."""
        return None

    def lead_latent_frames(self, path: str | Path, latent_frames: int) -> int:
        """Latent frames a one-block video of ``latent_frames`` on the model at ``path`` renders before its own and
        never decodes (read from JSON, as at submit; the loaded pipeline's ``VideoPipeline.lead_latent_frames``
        says the same); none by default."""
        return 0

    def guidance_embedded(self, path: str | Path) -> bool:
        """Whether the denoiser at ``path`` takes the guidance weight as an input instead of running a negative
        branch (its pipeline then runs one branch whatever the weight); False by default."""
        return False

    def video_notes(self, path: str | Path, spec: Any) -> list[str]:
        """What validation tells the submitter of how the model at ``path`` renders the valid video ``spec`` beyond
        what was asked (read from JSON at submit); none by default."""
        return []

    def step_segments(self, path: str | Path, steps: int) -> list[int]:
        """Steps per segment when the video model at ``path`` hands a ``steps``-step schedule from one denoiser to
        another (Wan 2.2's high- and low-noise experts: ``[high, low]``), so a job can run each as its own segment,
        placed anew; ``[]`` when one denoiser runs every step (the default)."""
        return []

    dynamic_cfg: bool = False
    """Whether the family's pipeline takes ``use_dynamic_cfg`` (CogVideoX's guidance weight rising over the steps),
    which a video job's field of that name then sets."""

    prompt_template: bool = False
    """Whether the family's pipeline takes a ``prompt_template`` (HunyuanVideo's: the text its LLM encoder reads the
    prompt in, and the leading tokens it crops), which a video job's field of that name then sets."""

    frame_rate: bool = False
    """Whether the family's pipeline takes a ``frame_rate`` (LTX-Video's: the rate its rotary positions are scaled
    to in time), which a video job's field of that name then sets; the MP4's ``fps`` is not the model's."""

    def adapter_options(self, spec: Any) -> dict[str, Any]:
        """Keyword arguments the family's frame, sequence and band adapters take from a video job (LTX-Video's
        ``frame_rate``); none by default."""
        return {}

    def takes_sequence_length(self, path: str | Path) -> bool:
        """The video model at ``path`` encodes its prompt through a diffusers pipeline that takes a
        ``max_sequence_length`` (a render's field of that name then sets it); read from JSON at submit. Default: no."""
        return False

    def has_second_guidance(self, path: str | Path) -> bool:
        """The video model at ``path`` takes a second guidance weight for its later steps (a render's
        ``guidance_scale_2``: Wan 2.2's low-noise expert); read from JSON at submit. Default: no."""
        return False

    def decodes_at_timestep(self, path: str | Path) -> bool:
        """The video model at ``path`` has a timestep-conditioned VAE decoder (a render's ``decode_timestep`` and
        ``decode_noise_scale`` apply; refused otherwise); read from JSON at submit. Default: no."""
        return False

    def takes_image(self, path: str | Path) -> bool:
        """The video model at ``path`` is conditioned on an image (a render's ``image`` field is then required,
        and refused otherwise); read from JSON at submit. Default: no."""
        return False

    def latent_space(self, path: str | Path) -> tuple[int, int]:
        """(latent channels, VAE downsampling stages): what the models of one job's segments must share."""
        vae = self.component_config(path, "vae")
        return vae.get("latent_channels", 4), len(vae.get("block_out_channels", [0]))

    def segment_traits(self, path: str | Path, sampler: str) -> dict[str, Any]:
        """What the model at ``path`` must share with a job's model to run a segment of its steps under the job's
        ``sampler``, read from JSON: the latent the steps hand over (``latent_space``, and the VAE's scaling of it,
        which the denoiser was trained on), and how the sampler steps it (``pipelines.samplers.sampling_traits``:
        the segment rebuilds its scheduler from its own config and loads the earlier segment's state into it).
        A trait two models both name must be equal; the VAE's and the training schedule's are always named."""
        from pipelines.sampler_steps import scheduler_config
        from pipelines.samplers import sampling_traits

        vae = self.component_config(path, "vae")
        scaling = {f"vae {key}": vae.get(key) for key in VAE_SCALING}
        return {"latent space": self.latent_space(path), **scaling, **sampling_traits(sampler, scheduler_config(path))}

    def latent_rgb_factors(self, path: str | Path, channels: int) -> tuple[Any, Any] | None:
        """The linear map of a preview (``pipelines.preview``): a (channels x 3) matrix and an RGB bias that
        approximate the VAE's decode of one latent pixel; None: the default map by channel count."""
        return None

    def cost_video_decoder(self, path: str | Path) -> dict:
        """A video model's VAE as ``ModelSpec`` fields (``vae_class``, ``vae_config``, ``decode_by_frames``) for the
        cost model's decode price (``parallel.cost.video_decode``): any VAE class diffusers has; an image VAE
        (``AutoencoderKL``, the built-in video model's) decodes each frame apart. Empty when there is none."""
        import diffusers

        vae = self.component_config(path, "vae")
        name = vae.get("_class_name", "")
        if not hasattr(diffusers, name):
            return {}
        config = {k: v for k, v in vae.items() if not k.startswith("_")}
        return {
            "vae_class": name,
            "vae_config": config,
            "decode_by_frames": name == "AutoencoderKL",
            "decode_extra_frames": self.cost_decode_extra_frames(config),
        }

    def cost_decode_extra_frames(self, vae_config: dict) -> int:
        """``ModelSpec.decode_extra_frames``: the family's ``decode_context`` both ways (a job may ask for another)."""
        return 2 * (self.decode_context or 0)

    def cost_job_decode_extra_frames(self, path: str | Path, context: int) -> int:
        """``ModelSpec.decode_extra_frames`` for a job's own ``decode_context``: a window of it both ways by default
        (LTX-Video's)."""
        return 2 * context

    def cost_decoder(self, path: str | Path) -> dict | None:
        """The VAE's config as ``ModelSpec.vae_config``, when it is the decode the cost model can build
        (diffusers' AutoencoderKL); None for another VAE."""
        vae = self.component_config(path, "vae")
        if vae.get("_class_name") != "AutoencoderKL":
            return None
        return {k: v for k, v in vae.items() if not k.startswith("_")}

    def cost_model(self, path: str | Path, dtype: str) -> ModelSpec | None:
        """The model described for the cost model (``parallel.cost``); None where it cannot be yet."""
        return None

    # --- a loaded model, in a worker -----------------------------------------------------------
    def load(self, path: str | Path, dtype: str, device: str) -> Any:
        """The pipeline, in eval mode on ``device``."""
        from pipelines.loading import load_pipeline

        return load_pipeline(path, dtype, device)

    def denoiser_of(self, pipe: Any) -> torch.nn.Module:
        return getattr(pipe, self.denoiser)

    def latent_shape(self, pipe: Any, height: int, width: int) -> tuple[int, int, int, int]:
        """(1, channels, rows, columns) of the latent the loop keeps (unpacked: bands are its rows)."""
        factor = pipe.vae_scale_factor
        if height % factor or width % factor:
            raise ValueError(f"height/width: {height}x{width} must be multiples of the VAE factor {factor}")
        return (1, self.denoiser_of(pipe).config.in_channels, height // factor, width // factor)

    def latent_dtype(self, pipe: Any) -> torch.dtype | None:
        """The dtype the pipeline's ``__call__`` prepares its initial latents in (None: the denoiser's, as most pass
        ``prompt_embeds.dtype``). A family whose pipeline keeps them in float32 under a half-precision denoiser
        says so: under bfloat16 it would otherwise start from rounded noise."""
        return None

    def set_timesteps(self, pipe: Any, scheduler: Any, steps: int, latent_shape: tuple, device: Any) -> None:
        """The sampler's timesteps, as the pipeline's ``__call__`` sets them (a flow-matching family passes its
        sigmas and resolution-dependent shift)."""
        scheduler.set_timesteps(steps, device=device)

    def decode(self, pipe: Any, latents: torch.Tensor, tiled: bool | None = None):
        """Float image in [0, 1], [height, width, 3], through the pipeline's VAE and image processor."""
        from pipelines.sampling import vae_decode

        latents = latents.to(device=pipe.vae.device, dtype=pipe.vae.dtype)
        return vae_decode(pipe, latents / pipe.vae.config.scaling_factor, tiled)

    def encode(
        self,
        pipe: Any,
        prompt: str,
        negative_prompt: str,
        guidance_scale: float,
        device: Any,
        image_size: tuple[int, int] | None = None,
    ) -> Conditioning:
        """The prompt through the pipeline's own ``encode_prompt``, called by keyword (a family with
        ``true_cfg`` also takes ``true_cfg_scale``, the weight of its classifier-free guidance)."""
        raise NotImplementedError(f"the {self.name} family renders no images")

    def denoise(self, model: torch.nn.Module, latent: torch.Tensor, t: torch.Tensor, inputs: dict, cond: Conditioning):
        """One forward of the denoiser on ``latent`` with one branch's (or both batched) ``inputs``."""
        raise NotImplementedError(f"the {self.name} family renders no images")

    def noise(self, model: torch.nn.Module, output: torch.Tensor) -> torch.Tensor:
        """The noise prediction in the denoiser's (guided) output."""
        return output

    def combine_guidance(self, uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
        """The guided prediction from the two branches' outputs (the latent's layout, or a band of it), as the
        family's pipeline combines them: classifier-free guidance, ``uncond + scale * (cond - uncond)``, unless the
        pipeline does more (QwenImagePipeline rescales it to the conditional's norm)."""
        return uncond + scale * (cond - uncond)

    def training_layers(self, model: torch.nn.Module, text_encoder: torch.nn.Module | None = None) -> list:
        """The denoiser (after its text encoder) as tuple-in, tuple-out layers for pipeline training
        (``parallel.training``)."""
        raise NotImplementedError(f"the {self.name} family has no plan for pipeline training")

    def patch_plan(self, model: torch.nn.Module, config: PatchConfig) -> PatchPlan:
        """How the denoiser runs on row bands (``parallel.patch.parallelize_patch``)."""
        raise NotImplementedError(f"the {self.name} family has no patch plan")

    def sequence_plan(self, model: torch.nn.Module, config: PatchConfig, workers: int) -> PatchPlan | None:
        """A video model's own sequence-parallel plan on ``workers``, for a model diffusers ships no ``_cp_plan``
        for: a band plan whose attention runs Ulysses (``parallel.patch.parallelize_patch``). None: the model's
        ``_cp_plan`` under diffusers' context parallelism (``parallel.sequence``)."""
        return None

    def whole_video_modules(self, model: torch.nn.Module) -> list[torch.nn.Module]:
        """The diffusers models a one-block video's plan goes on, each on its own: under diffusers' context
        parallelism with its class's ``_cp_plan`` (``sequence``), or its family's ``patch_plan`` or
        ``sequence_plan`` (bands): the denoiser itself, unless the family loads several into one module (Wan 2.2's
        two experts)."""
        return [model]
