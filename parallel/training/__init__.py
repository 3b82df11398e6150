"""Pipeline training mechanics: a model as a list of layers cut into DeepSpeed pipeline stages.

- ``layers``: the tuple carried between layers, and running a layer list on one device;
- ``partition``: stage boundaries from measured forward + backward costs;
- ``module``: a DeepSpeed ``PipelineModule`` cut at given boundaries;
- ``bubble_fill``: frozen work for upcoming micro-batches computed in the pipeline's idle slots.

A model family supplies its layer list (``pipelines.families.*.training``).
"""
