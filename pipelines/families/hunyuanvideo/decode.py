"""Decode the frame blocks of one HunyuanVideo video through ``AutoencoderKLHunyuanVideo``, block by block, exactly
as diffusers' own ``vae.decode`` decodes the whole video.

Unlike Wan's VAE, HunyuanVideo's keeps no causal cache that could be carried from one call to the next: its
GroupNorms and mid-block attention see every frame of a call at once. What ``vae.decode`` does with a long latent
(more than ``tile_sample_min_num_frames`` frames' worth) is decode it in overlapping temporal tiles
(``_temporal_tiled_decode``): tile ``k`` takes latent frames ``[k s, k s + m + 1)`` (``m``, ``s``: the tile's
length and stride in latent frames, 4 and 3 by default), drops its first decoded frame after the first tile, and is
blended with tile ``k - 1`` over their overlap; its first ``stride`` frames are the video's. Each tile is a pure
function of its latent frames, so ``HunyuanBlockDecoder`` runs the same tiles as the blocks come in, keeps the
latent frames and the last decoded tile the next ones need, and returns the frames of every tile whose latent
frames are all in.

Which frames a call returns is a rule of the counts alone (``pipelines.video_pipeline.decodable_latent_frames``):
those of every latent frame received but the last ``context`` (the job's ``decode_context``; the family's default,
``m``, is what a tile reaches past its frames, so the frames equal the whole decode's), all of them at the video's
end. A smaller context returns frames sooner from tiles cut short at the last latent frame received (the old seam:
``tests/video/test_hunyuan_decode_lookahead.py`` measures it). A video of at most ``m`` latent frames, which
``vae.decode`` does not tile (nor any video once ``use_framewise_decoding`` is turned off), is held and decoded in
one call at its end. The held latent frames and the counts are the
state a service checkpoint carries (``export_state``; ``runtime.jobs.video_state``).
"""

from __future__ import annotations

import numpy as np
import torch

from pipelines.frame_counts import decoded_frame_count
from pipelines.video_pipeline import decodable_latent_frames


class HunyuanBlockDecoder:
    """Decodes consecutive frame blocks of one video of ``video_latent_frames`` (None: each call's latent frames
    end the video so far), holding back the last ``context`` latent frames received; call it in video order."""

    def __init__(self, vae, video_processor, video_latent_frames: int | None = None, context: int | None = None) -> None:
        self.vae = vae
        self.video_processor = video_processor
        self.ratio = int(vae.config.temporal_compression_ratio)
        self.tile = int(vae.tile_sample_min_num_frames) // self.ratio
        """Latent frames of a temporal tile, less the one it reaches past them (``m``)."""
        self.stride = max(1, int(vae.tile_sample_stride_num_frames) // self.ratio)
        """Latent frames between the starts of two tiles (``s``)."""
        self.sample_stride = int(vae.tile_sample_stride_num_frames)
        self.blend = int(vae.tile_sample_min_num_frames) - self.sample_stride
        self.video_latent_frames = video_latent_frames
        self.right = context or 0
        self.held: torch.Tensor | None = None
        """The latent frames received from ``held_from`` on."""
        self.held_from = 0
        self.received = 0
        self.decoded = 0
        """Latent frames whose video frames were returned."""
        self._tiles: dict[int, tuple[torch.Tensor, int]] = {}
        """Decoded tiles kept for the next call: index -> (frames, latent frames received when decoded)."""

    def _tiled(self, total: int) -> bool:
        """Whether ``vae.decode`` decodes a video of ``total`` latent frames in temporal tiles."""
        return bool(self.vae.use_framewise_decoding) and total > self.tile

    def _run(self, first: int, last: int) -> torch.Tensor:
        """The decoder on latent frames [first, last), as ``_temporal_tiled_decode`` runs it on a tile."""
        vae = self.vae
        z = self.held[:, :, first - self.held_from : last - self.held_from] / vae.config.scaling_factor
        rows, cols = vae.tile_sample_min_height // vae.spatial_compression_ratio, vae.tile_sample_min_width // vae.spatial_compression_ratio
        if vae.use_tiling and (z.shape[-1] > cols or z.shape[-2] > rows):
            return vae.tiled_decode(z, return_dict=True).sample
        return vae.decoder(vae.post_quant_conv(z))

    def _tile(self, index: int) -> torch.Tensor:
        """Tile ``index`` decoded over the latent frames received (its first frame dropped after the first tile)."""
        kept = self._tiles.get(index)
        end = min(index * self.stride + self.tile + 1, self.received)
        if kept is not None and (kept[1] == self.received or kept[1] >= index * self.stride + self.tile + 1):
            return kept[0]
        video = self._run(index * self.stride, end)
        video = video[:, :, 1:] if index else video
        self._tiles[index] = (video, self.received)
        return video

    def _row(self, index: int) -> torch.Tensor:
        """The video frames tile ``index`` gives the whole decode: ``stride`` of them (one more for the first)."""
        if index == 0:
            return self._tile(0)[:, :, : self.sample_stride + 1]
        tile = self.vae.blend_t(self._tile(index - 1), self._tile(index).clone(), self.blend)  # blend_t writes into b
        return tile[:, :, : self.sample_stride]

    def _row_of(self, frame: int) -> int:
        return 0 if frame <= self.sample_stride else (frame - 1) // self.sample_stride

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """[1, C, F, h, w] latent frames -> [1, 3, F', H, W] video in [-1, 1]: the frames now decodable, continuing
        the video."""
        vae = self.vae
        z = latent.to(device=vae.device, dtype=vae.dtype)
        self.held = z if self.held is None else torch.cat([self.held.to(z), z], dim=2)
        self.received += z.shape[2]
        total = self.received if self.video_latent_frames is None else self.video_latent_frames
        ready = decodable_latent_frames(self.received, total, self.right)
        if not self._tiled(total) and self.received < total:  # decoded in one call: at the video's end
            ready = 0
        first, last = decoded_frame_count(self.decoded, self.ratio), decoded_frame_count(ready, self.ratio)
        if last <= first:
            height, width = (side * vae.spatial_compression_ratio for side in z.shape[3:])
            return torch.zeros(1, 3, 0, height, width, dtype=vae.dtype, device=vae.device)
        if not self._tiled(total):  # decoded in one call, as vae.decode does (the video's frames are all held)
            video = self._run(self.held_from, self.received)[:, :, first:last]
        else:
            rows = range(self._row_of(first), self._row_of(last - 1) + 1)
            starts = [0 if k == 0 else self.sample_stride * k + 1 for k in rows]
            video = torch.cat([self._row(k) for k in rows], dim=2)[:, :, first - starts[0] : last - starts[0]]
            keep = max(0, self._row_of(last) - 1)  # the tile the next frames' row blends with
            self._tiles = {k: v for k, v in self._tiles.items() if k >= keep}
            drop = keep * self.stride - self.held_from
            if drop > 0:
                self.held, self.held_from = self.held[:, :, drop:].clone(), keep * self.stride
        self.decoded = ready
        return video

    def __call__(self, latent: torch.Tensor) -> np.ndarray:
        """[1, C, F, h, w] -> [F', H, W, 3] uint8 frames, as the pipeline's video processor makes them."""
        video = self.decode(latent)
        if video.shape[2] == 0:
            return np.zeros((0, video.shape[3], video.shape[4], 3), dtype=np.uint8)
        frames = self.video_processor.postprocess_video(video.float(), output_type="np")[0]
        return (frames * 255).round().astype(np.uint8)

    def export_state(self) -> dict:
        """The state a checkpoint carries: the held latent frames and the counts (a decoded tile is decoded again)."""
        held = None if self.held is None else self.held.detach().cpu().clone()
        return {"held": held, "held_from": self.held_from, "received": self.received, "decoded": self.decoded}

    def load_state(self, state: dict) -> None:
        """Continue from ``export_state``'s output."""
        if "held" not in state:  # the decoder before the tiles were held back kept a look-back only
            raise ValueError(
                "checkpoint: its HunyuanVideo decoder state is from before the decode followed the whole video's "
                "temporal tiles and cannot continue them; start the job again"
            )
        held = state["held"]
        self.held = None if held is None else held.to(self.vae.device)
        self.held_from, self.received, self.decoded = (int(state[k]) for k in ("held_from", "received", "decoded"))
        self._tiles = {}
