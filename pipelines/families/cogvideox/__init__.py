"""The CogVideoX family: ``CogVideoXPipeline`` directories (CogVideoX 1.0 and 1.5 text-to-video).

``loading`` (the directory's check and its ``VideoPipeline``: T5 prompts through the pipeline's own
``encode_prompt``, the DDIM or DPM scheduler stepped as ``CogVideoXPipeline.__call__`` steps it), ``decode`` (the
causal 3-D VAE streamed block by block with its cache carried over), ``frames`` (the frame plan) and ``patch``
(row bands of every frame of the whole video, the model's own forward driven by ``whole.CogVideoXWholeAdapter``)
and ``ulysses`` (``sequence``: diffusers 0.42 ships no ``_cp_plan`` for the transformer, so the family brings its
own Ulysses over the bands' split of the video). Renders ``job=video`` with ``parallel.strategy`` none, frames,
sequence or patch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.families.base import ModelFamily


def rotary_only(transformer_config: dict) -> bool:
    """A CogVideoX transformer with rotary positions only, which takes a prompt of any length; otherwise its patch
    embedding adds a sincos or learned position table built for ``max_text_seq_length`` prompt tokens."""
    rotary = transformer_config.get("use_rotary_positional_embeddings", False)
    return bool(rotary) and not transformer_config.get("use_learned_positional_embeddings", False)


class CogVideoXFamily(ModelFamily):
    name = "cogvideox"
    job = "video"
    pipelines = ("CogVideoXPipeline",)
    call_guidance = {"CogVideoXPipeline": (6.0, 1.0)}
    dynamic_cfg = True
    denoiser = "transformer"
    denoisers = ("CogVideoXTransformer3DModel",)
    samplers = ()  # a video renders with the scheduler its directory names
    strategies = ("none", "frames", "sequence", "patch")

    def check_dir(self, path: Path, index: dict) -> None:
        from pipelines.families.cogvideox.loading import check_cogvideox_dir

        check_cogvideox_dir(path, index)

    def max_stages(self, path: str | Path) -> int:
        """Frame-pipeline stages the model can be cut into: one transformer block each at most."""
        return int(self.component_config(path, "transformer").get("num_layers", 0))

    def band_alignment(self, path: str | Path) -> int:
        """A band holds whole patch rows (the transformer's ``patch_size``)."""
        return int(self.component_config(path, "transformer").get("patch_size", 2))

    def latent_factor(self, path: str | Path) -> int:
        """Pixels per latent row and column: 2 per down block of the VAE."""
        return 2 ** (len(self.component_config(path, "vae").get("block_out_channels", [0])) - 1)

    def temporal_factor(self, path: str | Path) -> int:
        return int(self.component_config(path, "vae").get("temporal_compression_ratio", 4))

    def takes_sequence_length(self, path: str | Path) -> bool:
        return True

    def video_error(self, path: str | Path, spec: Any) -> tuple[str, str] | None:
        """Whole latent frames per block, and an even number of them: the VAE decodes latent frames in pairs
        (``decode``) and CogVideoX 1.5's temporal patch (``patch_size_t=2``) covers two. The whole video as one block
        may hold an odd number, as the pipeline renders it (diffusers' 49 frames, 13 latent frames): the block decoder
        chunks it as ``AutoencoderKLCogVideoX._decode`` does, and 1.5 renders one more latent frame at the front and
        drops it before decoding (``loading.CogVideoXVideoPipeline.lead_latent_frames``)."""
        problem = super().video_error(path, spec)
        if problem is not None:
            return problem
        transformer = self.component_config(path, "transformer")
        tokens, table = getattr(spec, "max_sequence_length", None), int(transformer.get("max_text_seq_length", 226))
        if tokens is not None and tokens != table and not rotary_only(transformer):
            return (
                "max_sequence_length",
                f"this CogVideoX transformer's patch embedding adds a position table for exactly {table} prompt "
                f"tokens; got {tokens} (leave it unset)",
            )
        if transformer.get("use_learned_positional_embeddings"):  # diffusers' CogVideoXPatchEmbed refuses other sizes
            scale = self.latent_factor(path)
            size = (transformer.get("sample_height", 0) * scale, transformer.get("sample_width", 0) * scale)
            if (spec.height, spec.width) != size:
                return (
                    "height",
                    f"this CogVideoX transformer has learned positional embeddings, which diffusers runs only at its "
                    f"sample size {size[0]}x{size[1]}; got {spec.height}x{spec.width}",
                )
        if transformer.get("patch_size_t") and transformer.get("use_rotary_positional_embeddings"):
            # 1.5's rotary grid is a slice of one sized by the transformer's sample size (diffusers'
            # `_prepare_rotary_positional_embeddings`, grid_type="slice"): a larger frame has no positions to take
            scale = self.latent_factor(path)
            patch = transformer.get("patch_size", 1)
            for field, size, sample in (("height", spec.height, "sample_height"), ("width", spec.width, "sample_width")):
                most = transformer.get(sample, 0) // patch * patch * scale
                if size // (scale * patch) > transformer.get(sample, 0) // patch:
                    return (
                        field,
                        f"this CogVideoX 1.5 transformer's rotary positions reach {most} pixels ({sample} "
                        f"{transformer.get(sample)} latent pixels); got {field} {size}",
                    )
        factor = self.temporal_factor(path)
        one_block = spec.block_frames == spec.frames  # the whole video: padded and decoded as the pipeline does
        if (spec.block_frames // factor) % 2 and not one_block:
            patch = transformer.get("patch_size_t")
            why = f"the temporal patch (patch_size_t={patch}) and " if patch else ""
            return (
                "block_frames",
                f"a CogVideoX block must hold an even number of latent frames ({why}the VAE's decode in pairs of "
                f"latent frames across blocks need it): block_frames must be a multiple of {2 * factor}, or the "
                f"whole video as one block (block_frames=frames), got {spec.block_frames}",
            )
        return self.whole_video_split_error(path, spec)

    def decoded_frames(self, path: str | Path, spec: Any) -> int:
        """4 per latent frame, but a one-block video of an odd count decodes its first latent frame to one frame
        (``loading.CogVideoXVideoPipeline.video_frames``)."""
        from pipelines.frame_counts import decoded_frame_count

        factor = self.temporal_factor(path)
        return decoded_frame_count(spec.frames // factor, factor, paired=True)

    def lead_latent_frames(self, path: str | Path, latent_frames: int) -> int:
        """CogVideoX 1.5's padding of an odd count to its temporal patch (``loading.CogVideoXVideoPipeline
        .lead_latent_frames``), from the transformer's config."""
        from pipelines.frame_counts import lead_frames

        return lead_frames(latent_frames, self.component_config(path, "transformer").get("patch_size_t"))

    def video_notes(self, path: str | Path, spec: Any) -> list[str]:
        """A one-block video of an odd number of latent frames on CogVideoX 1.5: the latent frame it renders more."""
        latent = spec.frames // self.temporal_factor(path)
        extra = self.lead_latent_frames(path, latent)
        if spec.block_frames != spec.frames or not extra:
            return []
        return [
            f"frames: this CogVideoX 1.5 transformer's temporal patch takes latent frames in pairs, so the video renders "
            f"{latent + extra} latent frames for its {latent}, the first {extra} drawn and dropped before decoding, as "
            "CogVideoXPipeline pads them"
        ]

    def cost_model(self, path: str | Path, dtype: str):
        """The transformer from its config.json as a "video-mmdit-bfchw" (``parallel.cost``): joint attention over
        the prompt at the length the pipeline encodes (``loading.prompt_length``) and the frames-first video."""
        from parallel.cost.models import ModelSpec
        from pipelines.families.cogvideox.loading import prompt_length

        config = self.component_config(path, "transformer")
        return ModelSpec(
            name=str(path),
            class_name=config["_class_name"],
            config={k: v for k, v in config.items() if not k.startswith("_")},
            kind="video-mmdit-bfchw",
            latent_channels=int(config.get("in_channels", 16)),
            vae_scale=self.latent_factor(path),
            text_len=prompt_length(config),
            text_dim=int(config.get("text_embed_dim", 4096)),
            temporal_scale=self.temporal_factor(path),
            dtype=dtype,
            **self.cost_video_decoder(path),
        )

    def load(self, path: str | Path, dtype: str, device: str) -> Any:
        from pipelines.families.cogvideox.loading import load_cogvideox_pipeline

        return load_cogvideox_pipeline(path, dtype, device)

    def frame_adapter(self, model, block_shape: tuple[int, int, int, int], context_frames: int):
        """The frame plan (``parallel.frames.adapter.FrameAdapterFactory``)."""
        from pipelines.families.cogvideox.frames import CogVideoXFrameAdapter

        return CogVideoXFrameAdapter(model, block_shape, context_frames)

    def band_adapter(self, model, block_shape: tuple[int, int, int, int], context_frames: int = 0):
        """The whole-video forward the patch plan (``patch_plan``) runs on a band of rows of every frame."""
        from pipelines.families.cogvideox.whole import CogVideoXWholeAdapter

        return CogVideoXWholeAdapter(model, block_shape, context_frames)

    def patch_plan(self, model, config):
        from pipelines.families.cogvideox.patch import cogvideox_patch_plan

        return cogvideox_patch_plan(model, config)

    def sequence_plan(self, model, config, workers: int):
        """Tessera's Ulysses over the joint attention, on row bands (``ulysses``): diffusers has no plan. The cost
        model prices it as diffusers' Ulysses; the prompt's stream, which every worker computes whole here, is the
        difference (226 tokens beside the video's thousands)."""
        from pipelines.families.cogvideox.ulysses import cogvideox_ulysses_plan

        return cogvideox_ulysses_plan(model, config, workers)


COGVIDEOX = CogVideoXFamily()
