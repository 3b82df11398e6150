"""Decode the frame blocks of one HunyuanVideo video through ``AutoencoderKLHunyuanVideo``, block by block.

Unlike Wan's VAE, HunyuanVideo's keeps no causal cache that could be carried from one call to the next: its
GroupNorms and mid-block attention see every frame of a call at once. What diffusers' own ``vae.decode`` does
with a long latent is decode it in overlapping temporal tiles (``_temporal_tiled_decode``: tiles of
``tile + 1`` latent frames every ``stride``, each after the first dropping its first decoded frame and blended
with the tile before over the overlap). Each tile is a pure function of its latent frames, so
``HunyuanBlockDecoder`` decodes a block together with the previous blocks' last latent frames back to a tile
start of the whole video (at most ``2 * stride + 1`` frames, its ``cache``): the block's tiles then fall where
the whole video's do and its frames equal the whole decode's, except near its end, where the tiles that would
reach into the next block are cut short (the seam: ``tests/video/test_hunyuan_pipeline.py`` reports its PSNR).
The frame counts are the whole decode's (``1 + 4 (F - 1)`` for ``F`` latent frames). With framewise decoding
off (``vae.use_framewise_decoding``) a block is decoded after one latent frame of the block before. The
latent frames it keeps and the count decoded are its state, which a service checkpoint carries
(``runtime.jobs.video_state.export_decoder_state``).
"""

from __future__ import annotations

import numpy as np
import torch


class HunyuanBlockDecoder:
    """Decodes consecutive frame blocks of one video; call it on the blocks in video order."""

    def __init__(self, vae, video_processor) -> None:
        self.vae = vae
        self.video_processor = video_processor
        ratio = int(vae.config.temporal_compression_ratio)
        self.stride = max(1, int(vae.tile_sample_stride_num_frames) // ratio)
        """Latent frames between the starts of two temporal tiles of diffusers' decode."""
        self.lookback = 2 * self.stride + 1 if vae.use_framewise_decoding else 1
        """Latent frames of the blocks before that a block may need."""
        self.cache: list = [None, 0]
        """[the last ``lookback`` latent frames decoded (None before the first block), latent frames decoded]."""
        self.first = True
        """The next block is the video's first."""

    def _tile_start(self, start: int) -> int:
        """Where the decode of a block beginning at latent frame ``start`` begins: a tile start of the whole
        video whose first tile ends before ``start`` (that tile is the only one not blended with a previous one)."""
        if not self.vae.use_framewise_decoding:
            return start - 1
        return max(0, self.stride * ((start - self.stride - 1) // self.stride))

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """[1, C, F, h, w] latent frames -> [1, 3, F', H, W] video in [-1, 1], continuing the video."""
        vae = self.vae
        z = latent.to(device=vae.device, dtype=vae.dtype)
        kept, start = self.cache
        chunk, skip = z, 0
        if start > 0:
            begin = self._tile_start(start)
            chunk = torch.cat([kept[:, :, kept.shape[2] - (start - begin) :].to(z), z], dim=2)
            skip = 1 + vae.config.temporal_compression_ratio * (start - begin - 1)  # the frames before ``start``
        video = vae.decode(chunk / vae.config.scaling_factor, return_dict=False)[0][:, :, skip:]
        seen = z if kept is None else torch.cat([kept.to(z), z], dim=2)
        self.cache, self.first = [seen[:, :, -self.lookback :].clone(), start + z.shape[2]], False
        return video

    def __call__(self, latent: torch.Tensor) -> np.ndarray:
        """[1, C, F, h, w] -> [F', H, W, 3] uint8 frames, as the pipeline's video processor makes them."""
        frames = self.video_processor.postprocess_video(self.decode(latent).float(), output_type="np")[0]
        return (frames * 255).round().astype(np.uint8)
