"""The HTTP API: a Ray Serve application with a FastAPI ingress, in front of the same controller actor as the
CLI and the Python client (so queue, priorities, pauses and recovery are shared).

``app.py`` builds and starts it; ``routes_*.py`` hold one resource each (jobs, a video job's HLS stream, OpenAI
images, videos, pools);
``dashboard.py`` serves the web dashboard (``static/``) at ``/``; ``auth.py`` turns a bearer token into a tenant; ``errors.py`` makes every refusal a 4xx JSON naming the field;
``schema.py`` builds the OpenAPI schema of job specs from their dataclass fields and docstrings; ``client.py``
is the Python client over HTTP (``Client(url=..., token=...)``). Importing this package imports neither Ray
Serve nor FastAPI: the client needs neither.
"""
