"""Layer-and-frame pipelining of a video DiT (DualParal) over a process group.

- ``schedule``: the frame-block queue (which block takes which step at which tick);
- ``pipeline``: ``FramePipeline``, one stage's share of a render, over a family's ``FrameAdapter`` (``adapter``);
- ``partition``: stage boundaries (and each stage's share of the decode) from measured layer and decode costs;
- ``decode``: a per-frame VAE's block decode split by frames over the stages;
- ``ring``: stage-to-stage sends and receives posted ahead; ``cache``: the neighbour blocks' edge K/V;
- ``noise``: the shared noise template; ``trace``: the event log the overlap tests read.
"""
