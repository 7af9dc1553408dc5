# One image for the API and the workers of cryoclust.
#   docker build -t cryoclust .                                   # CUDA build of torch (GPU workers)
#   docker build -t cryoclust:cpu --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu .
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cu124
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 1000 cryoclust \
    && mkdir /data && chown cryoclust:cryoclust /data

WORKDIR /app
# torch first, from its own index: the layer stays cached while the code changes.
RUN pip install --index-url "$TORCH_INDEX" "torch>=2.2,<3"
COPY pyproject.toml README.md ./
COPY cryoclust cryoclust
COPY backend backend
COPY worker worker
COPY frontend frontend
RUN pip install .

USER cryoclust
# NUMBA_CACHE_DIR on the volume: the UMAP view's compiled functions outlive the container.
ENV CRYOCLUST_DATA_DIR=/data \
    NUMBA_CACHE_DIR=/data/.numba-cache \
    CRYOCLUST_FRONTEND_DIR=/app/frontend \
    CRYOCLUST_HOST=0.0.0.0 \
    CRYOCLUST_PORT=8000
VOLUME /data
EXPOSE 8000
CMD ["cryoclust", "serve", "--no-worker"]
