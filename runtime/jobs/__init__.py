"""Running jobs on worker groups, one module per job kind, through one driver protocol.

- ``driver``: the protocol every kind's driver follows (begin, advance n units, snapshot, finish) and
  ``drive``, the loop that runs one segment of any kind; ``JobStopped``, the one stop signal;
- ``strategies``: which parallel strategies each kind runs, and where a worker sets each one up;
- ``image``, ``image_session``, ``image_patch``: image renders (driver side, worker side, patch bands);
- ``video``, ``video_session``, ``video_state``: video renders through the frame pipeline.
"""
