# The trainer image that every RayJob's head and workers run: a Ray base image plus radscale[trainer].
# The Ray version must match the one radscale pins against (ray 2.60, Python 3.11, CUDA 12):
#   docker build -f docker/trainer.Dockerfile -t ghcr.io/radscale/trainer:0.1.0 .
FROM rayproject/ray:2.60.0-py311-cu128
WORKDIR /home/ray/radscale
# setup.py finds the packages (every folder of .py files under radscale/, operator/, trainer/)
COPY --chown=ray:users pyproject.toml setup.py README.md ./
COPY --chown=ray:users radscale radscale
COPY --chown=ray:users operator operator
COPY --chown=ray:users trainer trainer
# torch comes as the CUDA build here (no CPU pin), with the triton it requires.
RUN pip install --no-cache-dir ".[trainer]"
ENV PYTHONUNBUFFERED=1
