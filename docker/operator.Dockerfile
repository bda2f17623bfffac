# The operator image: radscale[operator] only (kopf, kubernetes, pydantic, numpy/scipy, fsspec, s3fs);
# no torch, ray or triton. Build from the repository root:
#   docker build -f docker/operator.Dockerfile -t ghcr.io/radscale/operator:0.1.0 .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY radscale radscale
COPY operator operator
COPY trainer trainer
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[operator]"

FROM python:3.11-slim
RUN useradd --uid 65532 --create-home --shell /usr/sbin/nologin radscale
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 65532:65532
# The chart passes `run --standalone --liveness=... -m radscale.operator.handlers` as args.
ENTRYPOINT ["kopf"]
