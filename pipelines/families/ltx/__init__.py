"""The LTX-Video family: diffusers ``LTXPipeline`` directories (text-to-video).

A T5 text encoder, ``LTXVideoTransformer3DModel`` on packed latent tokens, the 3-D ``AutoencoderKLLTXVideo``
(8 frames and 32 pixels per latent; 8k+1 frames) and a flow-matching Euler sampler whose shift follows the
token count (``loading``). Its plans: ``frames`` (the transformer cut into the pieces the frame pipeline runs
on its stages, with the AdaLN modulation per block: ``frames``), ``sequence`` (the whole video as one sequence
under diffusers' context parallelism, its ``_cp_plan``: ``sequence``), ``patch`` (row bands of every frame of the
whole video: ``patch``), the blocks decoded one by one (``decode``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.families.base import ModelFamily


class LTXFamily(ModelFamily):
    name = "ltx"
    job = "video"
    pipelines = ("LTXPipeline",)
    call_guidance = {"LTXPipeline": (3.0, 1.0)}
    denoiser = "transformer"
    denoisers = ("LTXVideoTransformer3DModel",)
    samplers = ()  # a video renders with the scheduler its directory names (flow matching)
    strategies = ("none", "frames", "sequence", "patch")
    decode_context = 8  # latent frames each way: 59-93 dB against a whole decode (pipelines.families.ltx.decode)
    frame_rate = True

    def check_dir(self, path: Path, index: dict) -> None:
        from pipelines.families.ltx.loading import check_ltx_dir

        check_ltx_dir(path, index)

    def max_stages(self, path: str | Path) -> int:
        """Frame-pipeline stages the model can be cut into: one transformer block each at most."""
        return int(self.component_config(path, "transformer").get("num_layers", 0))

    def takes_sequence_length(self, path: str | Path) -> bool:
        return True

    def temporal_factor(self, path: str | Path) -> int:
        """8: LTX-Video's VAE packs 8 video frames into one latent frame (read from its config)."""
        from pipelines.families.ltx.loading import vae_factors

        return vae_factors(self.component_config(path, "vae"))[0]

    def decoded_frames(self, path: str | Path, spec: Any) -> int:
        """The first latent frame decodes to one frame, each later one to the decoder's frames per latent frame
        (``loading.LTXVideoPipeline.video_frames``)."""
        from pipelines.families.ltx.decode import decoder_factors_of
        from pipelines.frame_counts import decoded_frame_count

        latent = spec.frames // self.temporal_factor(path)
        return decoded_frame_count(latent, decoder_factors_of(self.component_config(path, "vae"))[0])

    def band_alignment(self, path: str | Path) -> int:
        """A band holds whole latent rows (LTX-Video's patch is one latent pixel)."""
        return int(self.component_config(path, "transformer").get("patch_size", 1))

    def latent_factor(self, path: str | Path) -> int:
        """32: pixels per latent row and column of LTX-Video's VAE (read from its config)."""
        from pipelines.families.ltx.loading import vae_factors

        return vae_factors(self.component_config(path, "vae"))[1]

    def video_error(self, path: str | Path, spec: Any) -> tuple[str, str] | None:
        """Whole latent frames per block (the default), and a frame size of whole latent rows and columns
        (32 pixels each for LTX-Video's VAE)."""
        problem = super().video_error(path, spec)
        if problem is not None:
            return problem
        from pipelines.families.ltx.loading import vae_factors

        temporal, spatial = vae_factors(self.component_config(path, "vae"))
        for name in ("height", "width"):
            value = getattr(spec, name)
            if value % spatial:
                return (
                    name,
                    f"this model's VAE maps {spatial} pixels to one latent; {name} must be a multiple of {spatial}, got {value}",
                )
        degree = spec.parallel.split_degree  # the workers of one forward (under CFG parallel, a branch's)
        if spec.parallel.strategy == "patch" and isinstance(degree, int) and degree > 1:
            return self.band_error(path, spec.height, degree)
        if spec.parallel.strategy != "sequence" or not isinstance(degree, int) or degree < 2:
            return None
        if getattr(spec.parallel, "ring", 1) > 1:
            return (
                "parallel.ring",
                "LTX-Video masks the prompt's padding in cross-attention, and diffusers' Ring attention takes no "
                "mask; use Ulysses (parallel.ring=1)",
            )
        video_tokens = spec.frames // temporal * (spec.height // spatial) * (spec.width // spatial)
        return self._sequence_error(path, video_tokens, degree, getattr(spec, "max_sequence_length", None))

    def _sequence_error(
        self, path: str | Path, video_tokens: int, degree: int, prompt_tokens: int | None = None
    ) -> tuple[str, str] | None:
        """What diffusers' Ulysses over ``degree`` workers needs of LTX's ``_cp_plan``: the attention heads, the
        video tokens and the prompt tokens (both are split at the model's entry) each divide between them. The
        prompt is the job's ``max_sequence_length`` tokens (``prompt_tokens``; None: the pipeline's default)."""
        heads = int(self.component_config(path, "transformer").get("num_attention_heads", 32))
        for what, count in (
            ("attention heads", heads),
            ("video tokens", video_tokens),
            ("prompt tokens", prompt_tokens or self._prompt_tokens(path)),
        ):
            if count % degree:
                if what == "prompt tokens" and prompt_tokens:
                    return (
                        "max_sequence_length",
                        f"sequence parallelism splits the prompt's {count} tokens between the {degree} workers; "
                        f"make it a multiple of {degree}",
                    )
                return (
                    "parallel.degree",
                    f"sequence parallelism splits the model's {count} {what} between the workers; {degree} does not "
                    "divide them",
                )
        return None

    def cost_model(self, path: str | Path, dtype: str):
        """The transformer from its config.json as a "video-packed" (``parallel.cost``): the latent packed into
        tokens as ``LTXPipeline`` packs it, the T5 prompt at the length it encodes (``_prompt_tokens``)."""
        from parallel.cost.models import ModelSpec

        config = self.component_config(path, "transformer")
        return ModelSpec(
            name=str(path),
            class_name=config["_class_name"],
            config={k: v for k, v in config.items() if not k.startswith("_")},
            kind="video-packed",
            latent_channels=int(config.get("in_channels", 128)),
            vae_scale=self.latent_factor(path),
            text_len=self._prompt_tokens(path),
            text_dim=int(config.get("caption_channels", 4096)),
            temporal_scale=self.temporal_factor(path),
            dtype=dtype,
            **self.cost_video_decoder(path),
            packing=int(config.get("patch_size", 1)),
        )

    def _prompt_tokens(self, path: str | Path) -> int:
        """The prompt tokens ``LTXVideoPipeline.encode_prompt`` passes: LTXPipeline's default length."""
        from pipelines.families.ltx.loading import LTX_MAX_SEQUENCE_LENGTH

        return LTX_MAX_SEQUENCE_LENGTH

    def decodes_at_timestep(self, path: str | Path) -> bool:
        """A 0.9.1-style VAE (``timestep_conditioning``): LTXPipeline's ``decode_timestep``/``decode_noise_scale``."""
        return bool(self.component_config(path, "vae").get("timestep_conditioning", False))

    def load(self, path: str | Path, dtype: str, device: str) -> Any:
        from pipelines.families.ltx.loading import load_ltx_pipeline

        return load_ltx_pipeline(path, dtype, device)

    def adapter_options(self, spec: Any) -> dict[str, Any]:
        """The job's ``frame_rate`` (None: the pipeline's default, 25)."""
        return {"frame_rate": spec.frame_rate}

    def frame_adapter(
        self, model, block_shape: tuple[int, int, int, int], context_frames: int, frame_rate: float | None = None
    ):
        """The frame plan (``parallel.frames.adapter.FrameAdapterFactory``), its rotary embedding scaled as
        ``LTXPipeline.__call__`` scales it at ``frame_rate`` (None: its default, 25) for the model's VAE
        (``rope_scale``)."""
        from pipelines.families.ltx.frames import LTXFrameAdapter, rope_scale

        return LTXFrameAdapter(model, block_shape, context_frames, rope_scale(model, frame_rate))

    def sequence_adapter(
        self, model, block_shape: tuple[int, int, int, int], context_frames: int = 0, frame_rate: float | None = None
    ):
        """The sequence plan: the model's own forward on the whole video as the frame pipeline's one layer, for
        diffusers' context parallelism to split (``pipelines.families.ltx.sequence``)."""
        from pipelines.families.ltx.frames import rope_scale
        from pipelines.families.ltx.sequence import LTXSequenceAdapter

        return LTXSequenceAdapter(model, block_shape, context_frames, rope_scale(model, frame_rate))

    def band_adapter(
        self, model, block_shape: tuple[int, int, int, int], context_frames: int = 0, frame_rate: float | None = None
    ):
        """The whole-video forward the patch plan (``patch_plan``) runs on a band of rows of every frame."""
        from pipelines.families.ltx.frames import rope_scale
        from pipelines.families.ltx.patch import LTXBandAdapter

        return LTXBandAdapter(model, block_shape, context_frames, rope_scale(model, frame_rate))

    def patch_plan(self, model, config):
        from pipelines.families.ltx.patch import ltx_patch_plan

        return ltx_patch_plan(model, config)


LTX = LTXFamily()
