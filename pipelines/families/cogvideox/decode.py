"""Stream the frame blocks of one video through CogVideoX's causal 3-D VAE (``AutoencoderKLCogVideoX``).

diffusers' ``AutoencoderKLCogVideoX._decode`` walks the latent video in chunks of
``num_latent_frames_batch_size`` (2) latent frames, handing the decoder's ``conv_cache`` (each causal
convolution's last input frames) from one chunk to the next. ``CogVideoXBlockDecoder`` runs the same loop with
diffusers' own ``decoder(z, conv_cache=...)`` but keeps the cache between calls: blocks decoded as they leave
the queue continue the video, with no seam, and concatenate to exactly ``vae.decode`` of the whole latent
video when every block holds an even number of latent frames (the chunks then fall where ``_decode``'s fall;
the family refuses odd blocks). Its group norms see one chunk at a time, as in ``_decode``, which is why the
chunking must match for equality. A block with an odd frame count is chunked as ``_decode`` chunks a video of
that length (its first chunk takes the extra frame). A video CogVideoX 1.5 padded at the front (``lead_frames``,
``CogVideoXVideoPipeline.lead_latent_frames``) loses those latent frames before its first chunk, as the pipeline's
``latents[:, additional_frames:]`` does (a one-block video: the frames after them are in the same block).

The cache is the decoder's own (one per video, never the module's), and a checkpoint carries it
(``export_state``/``load_state``, read by ``runtime.jobs.video_state``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def _flatten(cache: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    if isinstance(cache, dict):
        out: dict[str, torch.Tensor] = {}
        for key, value in cache.items():
            out.update(_flatten(value, f"{prefix}{key}/"))
        return out
    return {} if cache is None else {prefix: cache}


def _unflatten(flat: dict[str, torch.Tensor], device: torch.device) -> dict:
    root: dict = {}
    for path, value in flat.items():
        *parents, leaf = path.rstrip("/").split("/")
        node = root
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value.to(device)
    return root


class CogVideoXBlockDecoder:
    """Decodes consecutive frame blocks of one video; call it on the blocks in video order."""

    def __init__(self, vae: torch.nn.Module, lead_frames: int = 0) -> None:
        self.vae = vae
        self.conv_cache: dict | None = None
        """diffusers' decoder cache after the last chunk decoded (None before the first)."""
        self.lead_frames = lead_frames
        """Latent frames still to drop from the front of the video before decoding (CogVideoX 1.5's padding of an
        odd count, which ``CogVideoXPipeline`` drops as ``latents[:, additional_frames:]``)."""

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """[1, C, F, h, w] transformer latent frames -> [1, 3, F', H, W] video in [-1, 1]."""
        vae = self.vae
        dropped, self.lead_frames = min(self.lead_frames, latent.shape[2]), max(0, self.lead_frames - latent.shape[2])
        z = latent[:, :, dropped:].to(device=vae.device, dtype=vae.dtype) / vae.config.scaling_factor
        frames, size = z.shape[2], vae.num_latent_frames_batch_size
        extra = frames % size
        outs = []
        for i in range(max(frames // size, 1)):  # _decode's chunks of a video of this block's length
            start = size * i + (0 if i == 0 else extra)
            chunk = z[:, :, start : size * (i + 1) + extra]
            if vae.post_quant_conv is not None:
                chunk = vae.post_quant_conv(chunk)
            out, self.conv_cache = vae.decoder(chunk, conv_cache=self.conv_cache)
            outs.append(out)
        return torch.cat(outs, dim=2).clamp(-1.0, 1.0)

    def __call__(self, latent: torch.Tensor) -> np.ndarray:
        """[1, C, F, h, w] -> [F', H, W, 3] uint8 frames, continuing the video."""
        video = self.decode(latent)
        frames = ((video[0].float() + 1) * 127.5).round().to(torch.uint8)
        return frames.permute(1, 2, 3, 0).cpu().numpy()

    def export_state(self) -> dict[str, Any]:
        """The cache as plain CPU tensors by path (a checkpoint's decoder state)."""
        cache = {k: v.detach().cpu().clone() for k, v in _flatten(self.conv_cache).items()}
        return {"conv_cache": cache, "lead_frames": self.lead_frames}

    def load_state(self, state: dict[str, Any]) -> None:
        flat = state["conv_cache"]
        self.conv_cache = _unflatten(flat, self.vae.device) if flat else None
        self.lead_frames = int(state.get("lead_frames", self.lead_frames))
