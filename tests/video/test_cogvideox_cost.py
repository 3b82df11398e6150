"""The CogVideoX family describes a pipeline directory for the cost model as the pipeline runs it (the profile's
forward on the meta device costs what the real transformer does on the real prompt encoding, both guidance branches
batched, for the 1.0 and the 1.5 layouts), so ``parallel.strategy=auto`` picks among its frames, Ulysses and band
plans by the cost model's prediction."""

from __future__ import annotations

import pytest
import torch
from _tiny_cogvideox import save_tiny_cogvideox
from _video_cost import check_auto_picks_the_fastest
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from parallel.cost.profile import profile_model
from pipelines.families.cogvideox import COGVIDEOX

HEIGHT, WIDTH, FRAMES = 32, 32, 16  # 4 latent frames of 8 x 8


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cogvideox")
    return {v: str(save_tiny_cogvideox(root / f"tiny-{v}", version=v, layers=2)) for v in ("1.0", "1.5")}


@torch.no_grad()
@pytest.mark.parametrize("version", ["1.0", "1.5"])
def test_the_description_costs_what_the_pipeline_runs(dirs, version):
    path = dirs[version]
    pipe = COGVIDEOX.load(path, "float32", "cpu")
    text, negative, _ = pipe.conditioning("red stripes", "blurry", 5.0)
    channels, rows, cols = pipe.latent_shape(HEIGHT, WIDTH)
    latent_frames = pipe.latent_frames(FRAMES, "frames")
    adapter = COGVIDEOX.band_adapter(pipe.transformer, (channels, latent_frames, rows, cols))
    latent = torch.zeros(2, channels, latent_frames, rows, cols)
    counter = FlopCounterMode(display=False)
    # the math attention, as on the meta device: torch's CPU flash kernel has no FLOP formula to count
    with sdpa_kernel(SDPBackend.MATH), counter:
        cond = adapter.conditions(torch.tensor([500]), torch.cat([negative, text]))
        adapter.forward(adapter.embed(latent, cond), cond)
    described = COGVIDEOX.cost_model(path, "float32")
    assert described.kind == "video-mmdit-bfchw" and described.batch == 2
    assert (described.text_len, described.text_dim) == tuple(text.shape[1:])
    assert described.latent_shape(1, HEIGHT, WIDTH, FRAMES - 3) == (1, *latent.shape[1:])  # 4k+1 frames: 4 latent
    prof = profile_model(described, HEIGHT, WIDTH, FRAMES - 3, batch=2)
    params = sum(p.numel() for p in pipe.transformer.parameters())
    assert prof.flops == counter.get_total_flops() and prof.param_bytes == 4 * params
    p_t = pipe.transformer.config.patch_size_t or 1
    assert prof.tokens == latent_frames // p_t * (rows // 2) * (cols // 2) and prof.text_tokens == described.text_len


def test_auto_picks_the_cost_models_fastest_of_frames_ulysses_and_bands(dirs):
    fields = dict(prompt="x", negative_prompt="y", guidance_scale=5.0, frames=FRAMES, height=HEIGHT, width=WIDTH, steps=3)
    whole = ("sequence", "patch")  # sequence: Tessera's own Ulysses, priced as diffusers' all-to-alls
    check_auto_picks_the_fastest(COGVIDEOX, dirs["1.0"], fields, [(8, 2), (16, 3), (8, 1)], whole, batch=2)


def test_a_padded_one_block_video_is_priced_as_it_renders(dirs):
    """CogVideoX 1.5 renders a one-block video of 3 latent frames as 4 (the temporal patch's padding, drawn and
    dropped as CogVideoXPipeline does): the cost model prices the 4 it renders (its profile of the 3 asked for cannot
    even run the model: the patch embedding takes pairs), the family and the loaded pipeline agreeing on the
    padding; 1.0 pads nothing."""
    from cluster.jobs.video import VideoSpec
    from cluster.scheduler import CostModelDegreeRule, auto_choice
    from parallel.cost.video import pick_video_plan, rank_video_plans

    for version, lead in (("1.0", 0), ("1.5", 1)):
        path = dirs[version]
        assert COGVIDEOX.lead_latent_frames(path, 3) == COGVIDEOX.load(path, "float32", "cpu").lead_latent_frames(3)
        assert COGVIDEOX.lead_latent_frames(path, 3) == lead and COGVIDEOX.lead_latent_frames(path, 4) == 0
    path, rule = dirs["1.5"], CostModelDegreeRule()
    spec = VideoSpec.from_dict(
        dict(model=path, prompt="x", negative_prompt="y", guidance_scale=5.0, frames=12, block_frames=12, height=HEIGHT,
             width=WIDTH, steps=3, context_frames=0, parallel={"strategy": "auto", "degree": "auto"})
    )
    choice = auto_choice(spec, spec.model, 2, rule)
    described = COGVIDEOX.cost_model(path, "float32")

    def best(latent: int) -> dict:
        plans = rank_video_plans(described, HEIGHT, WIDTH, latent, latent, 3, 2, ("frames", "sequence", "patch"),
                                 max_stages=spec.max_stages(), batch=2, device=rule.device, link=rule.link)
        return pick_video_plan(plans).as_dict()

    assert choice["predicted"] == best(4)
