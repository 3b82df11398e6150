"""The HunyuanVideo family: ``HunyuanVideoPipeline`` directories (text-to-video, embedded guidance).

A Llama text encoder under the pipeline's prompt template and a CLIP text encoder for the pooled projection
(``loading``: the pipeline's own ``encode_prompt``), a ``HunyuanVideoTransformer3DModel`` of dual-stream then
single-stream blocks, the causal 3-D ``AutoencoderKLHunyuanVideo`` (4 frames per latent frame; ``decode``:
block by block on the whole video's temporal tiles) and flow-matching Euler with the pipeline's sigmas. Its
plans: ``frames`` (``frames.HunyuanFrameAdapter``: the transformer cut into the pieces the frame pipeline runs
on its stages), ``patch`` (row bands of every frame of the whole video: ``patch``, the model's own forward
driven by ``whole.HunyuanWholeAdapter``) and ``sequence``: diffusers 0.42 ships no ``_cp_plan`` for the
transformer (``patch``'s docstring says why one would not fit its joint attention), so the family brings its own
Ulysses (``ulysses``: the bands' split of the video, Q/K/V exchanged by heads). Its image-to-video variants
(``image_condition_type``) are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.errors import ModelDirectoryError
from pipelines.families.base import ModelFamily


class HunyuanVideoFamily(ModelFamily):
    name = "hunyuanvideo"
    job = "video"
    pipelines = ("HunyuanVideoPipeline",)
    call_guidance = {"HunyuanVideoPipeline": (6.0, 1.0)}
    true_cfg = True
    prompt_template = True
    denoiser = "transformer"
    denoisers = ("HunyuanVideoTransformer3DModel",)
    samplers = ()  # a video renders with the scheduler its directory names (flow matching)
    strategies = ("none", "frames", "sequence", "patch")

    decode_context = 4
    """Latent frames a block's decode waits for after it (``decode.HunyuanBlockDecoder``): what diffusers' temporal
    tile (16 frames, 4 latent frames of this VAE's 4 frames each) reaches past a tile's own frames, so the frames
    equal the whole video's decode. A job may ask for fewer (its frames sooner, cut tiles at the seams)."""

    def cost_decode_extra_frames(self, vae_config: dict) -> int:
        """The latent frames a block's decode reads beyond its own (``decode.HunyuanBlockDecoder``): each temporal
        tile of ``tile + 1`` latent frames advances ``stride`` (diffusers' 16 and 12 frames, in latent frames), each
        decoded once, so a block of one stride reads ``tile + 1 - stride`` more."""
        import torch
        from diffusers import AutoencoderKLHunyuanVideo

        with torch.device("meta"):
            vae = AutoencoderKLHunyuanVideo.from_config(vae_config)
        ratio = int(vae_config.get("temporal_compression_ratio", 4))
        stride = max(1, int(vae.tile_sample_stride_num_frames) // ratio)
        return int(vae.tile_sample_min_num_frames) // ratio + 1 - stride

    def cost_job_decode_extra_frames(self, path: str | Path, context: int) -> int:
        """A job's ``decode_context`` only delays the frames: each tile is still decoded once."""
        return self.cost_decode_extra_frames(self.component_config(path, "vae"))

    def check_dir(self, path: Path, index: dict) -> None:
        from pipelines.families.hunyuanvideo.loading import check_hunyuan_dir

        check_hunyuan_dir(path, index)
        condition = self.component_config(path, "transformer").get("image_condition_type")
        if condition is not None:
            raise ModelDirectoryError(
                f"{path}: image-conditioned HunyuanVideo (image_condition_type={condition!r}) is not supported"
            )

    def max_stages(self, path: str | Path) -> int:
        """Frame-pipeline stages the model can be cut into: one dual- or single-stream block each at most."""
        config = self.component_config(path, "transformer")
        return int(config.get("num_layers", 20)) + int(config.get("num_single_layers", 40))

    def band_alignment(self, path: str | Path) -> int:
        """A band holds whole patch rows (the transformer's ``patch_size``, square)."""
        return int(self.component_config(path, "transformer").get("patch_size", 2))

    def latent_factor(self, path: str | Path) -> int:
        """Pixels per latent row and column: the VAE's ``spatial_compression_ratio``."""
        return int(self.component_config(path, "vae").get("spatial_compression_ratio", 8))

    def takes_sequence_length(self, path: str | Path) -> bool:
        return True

    def decoded_frames(self, path: str | Path, spec: Any) -> int:
        """The causal VAE's first latent frame decodes to one frame (``loading.HunyuanVideoParts.video_frames``)."""
        from pipelines.frame_counts import decoded_frame_count

        factor = self.temporal_factor(path)
        return decoded_frame_count(spec.frames // factor, factor)

    def temporal_factor(self, path: str | Path) -> int:
        """Video frames per latent frame of the 3-D VAE (its ``temporal_compression_ratio``)."""
        return int(self.component_config(path, "vae").get("temporal_compression_ratio", 4))

    def video_error(self, path: str | Path, spec: Any) -> tuple[str, str] | None:
        """Whole latent frames per block and sizes the pipeline takes (multiples of 16 pixels). The guidance is
        embedded (``guidance_scale``, in a transformer with ``guidance_embeds``; one without ignores it, as the
        pipeline does); a negative prompt runs only under the pipeline's true CFG (``true_cfg_scale`` above 1) and is
        otherwise ignored, as the pipeline ignores it (the spec notes so); CFG parallel without true CFG is refused
        by the spec (``_check_cfg_guidance``)."""
        problem = super().video_error(path, spec)
        if problem is not None:
            return problem
        for field_name in ("height", "width"):
            if getattr(spec, field_name) % 16:
                return field_name, f"HunyuanVideo renders multiples of 16 pixels, got {getattr(spec, field_name)}"
        return self.whole_video_split_error(path, spec)

    def cost_model(self, path: str | Path, dtype: str):
        """The transformer from its config.json as a "video-mmdit" (``parallel.cost``): joint attention over the
        video and the prompt at the length the pipeline passes (``loading.prompt_length``), one forward per step (the
        guidance is embedded), two under true CFG."""
        from parallel.cost.models import ModelSpec
        from pipelines.families.hunyuanvideo.loading import prompt_length

        config = self.component_config(path, "transformer")
        return ModelSpec(
            name=str(path),
            class_name=config["_class_name"],
            config={k: v for k, v in config.items() if not k.startswith("_")},
            kind="video-mmdit",
            latent_channels=int(config.get("in_channels", 16)),
            vae_scale=self.latent_factor(path),
            text_len=prompt_length(),
            text_dim=int(config.get("text_embed_dim", 4096)),
            temporal_scale=self.temporal_factor(path),
            dtype=dtype,
            **self.cost_video_decoder(path),
            extra={"pooled_projections": int(config.get("pooled_projection_dim", 768))},
            batch=2,  # both branches under true CFG (the spec's guides() says which)
        )

    def load(self, path: str | Path, dtype: str, device: str) -> Any:
        from pipelines.families.hunyuanvideo.loading import load_hunyuan_pipeline

        return load_hunyuan_pipeline(path, dtype, device)

    def frame_adapter(self, model, block_shape: tuple[int, int, int, int], context_frames: int):
        """The frame plan (``parallel.frames.adapter.FrameAdapterFactory``)."""
        from pipelines.families.hunyuanvideo.frames import HunyuanFrameAdapter

        return HunyuanFrameAdapter(model, block_shape, context_frames)

    def band_adapter(self, model, block_shape: tuple[int, int, int, int], context_frames: int = 0):
        """The whole-video forward the patch plan (``patch_plan``) runs on a band of rows of every frame."""
        from pipelines.families.hunyuanvideo.whole import HunyuanWholeAdapter

        return HunyuanWholeAdapter(model, block_shape, context_frames)

    def patch_plan(self, model, config):
        from pipelines.families.hunyuanvideo.patch import hunyuan_patch_plan

        return hunyuan_patch_plan(model, config)

    def sequence_plan(self, model, config, workers: int):
        """Tessera's Ulysses over the joint attention, on row bands (``ulysses``): diffusers has no plan. The cost
        model prices it as diffusers' Ulysses (every token's work split, all-to-alls of Q/K/V and outputs); the
        prompt's stream, which every worker computes whole here, is the difference (a few hundred tokens beside
        the video's thousands)."""
        from pipelines.families.hunyuanvideo.ulysses import hunyuan_ulysses_plan

        return hunyuan_ulysses_plan(model, config, workers)


HUNYUANVIDEO = HunyuanVideoFamily()
