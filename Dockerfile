# NeuronMap service image: `neuronmap serve` (REST API, dashboard, analysis jobs) on CPU torch.
#   docker build -t neuronmap .
#   docker run -p 8000:8000 -v neuronmap-data:/data neuronmap
# The install and entrypoint steps live in docker/ so that scripts/image_smoke.py can run the same
# steps in a fresh virtual environment where no container runtime is available.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 NEURONMAP_PORT=8000 NEURONMAP_RUNS=/data/runs NEURONMAP_TOKEN_FILE=/data/tokens.json

WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY neuronmap ./neuronmap
COPY docker ./docker
RUN sh docker/install.sh python /src \
    && useradd --create-home --uid 10001 neuronmap \
    && mkdir -p /data/runs /models \
    && chown -R neuronmap:neuronmap /data

USER neuronmap
WORKDIR /home/neuronmap
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 CMD ["python", "/src/docker/healthcheck.py"]
ENTRYPOINT ["sh", "/src/docker/entrypoint.sh"]
