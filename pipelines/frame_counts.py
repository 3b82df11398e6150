"""How a video's frame count becomes latent frames under a VAE that packs ``factor`` frames into one latent frame.

Tessera counts ``factor`` frames per latent frame (84 for 21 latent frames at 4). diffusers' video pipelines count
``num_frames`` for a causal VAE, whose first latent frame is one frame: ``1 + factor (L - 1)`` (Wan's 81, CogVideoX's
49, HunyuanVideo's 129, LTX-Video's 161). A video's ``frames`` is taken in either count; a block (``block_frames``)
in Tessera's only, since blocks after the first have no frame of their own. Plain arithmetic, so the job spec checks
a count at submit without importing a model's code.
"""

from __future__ import annotations


def diffusers_latent_frames(frames: int, factor: int) -> int | None:
    """The latent frames of ``frames`` in diffusers' count (``1 + factor n``), or None when it is not of that form (or
    the VAE packs one frame per latent frame, where the two counts agree)."""
    if factor > 1 and frames % factor == 1:
        return (frames - 1) // factor + 1
    return None


def decoded_frame_count(latent_frames: int, factor: int, paired: bool = False) -> int:
    """Frames a video of ``latent_frames`` decodes to under a VAE of ``factor`` frames per latent frame: as many for a
    per-frame VAE (1); a causal VAE's first latent frame gives one frame (Wan, HunyuanVideo, LTX-Video: its decoder's
    factor); ``paired`` (CogVideoX's decode in pairs of latent frames) only an odd count's. The rule the spec's note
    and every loaded pipeline's ``video_frames`` share."""
    if factor == 1 or not latent_frames:
        return latent_frames
    if paired and latent_frames % 2 == 0:
        return factor * latent_frames
    return 1 + factor * (latent_frames - 1)


def lead_frames(latent_frames: int, temporal_patch: int | None) -> int:
    """Latent frames a video of ``latent_frames`` draws before its own so that a temporal patch of
    ``temporal_patch`` latent frames covers it, and drops before decoding (``CogVideoXPipeline``'s padding for
    CogVideoX 1.5's patch of 2); 0 without a temporal patch or when it divides."""
    return (temporal_patch - latent_frames % temporal_patch) % temporal_patch if temporal_patch else 0


def latent_frame_count(frames: int, factor: int, field_name: str = "frames") -> int:
    """Latent frames of ``frames`` video frames: Tessera's count, or for a whole video's ``frames`` diffusers' too;
    ValueError naming ``field_name`` for any other count."""
    if frames % factor == 0:
        return frames // factor
    latent = diffusers_latent_frames(frames, factor) if field_name == "frames" else None
    if latent is not None:
        return latent
    also = f" or one more (diffusers' num_frames: 1 + {factor} x n)" if field_name == "frames" else ""
    raise ValueError(
        f"{field_name}: this model's VAE packs {factor} frames into one latent frame; {field_name} must be a "
        f"multiple of {factor}{also}, got {frames}"
    )
