# GPU image for the training stages (reward models, PRM, PPO / GRPO / RLOO, offline RL), one node or many
# (trainer_job.py runs it under accelerate + DeepSpeed ZeRO-3 in a Kubeflow Trainer TrainJob).
# The devel base carries nvcc, which DeepSpeed needs to JIT-build its fused ops; TORCH_INDEX must name
# the torch build for the same CUDA major version as the base.
FROM nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04

ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HF_HOME=/tmp/huggingface \
    WANDB_MODE=offline

# Python 3.12 is Ubuntu 24.04's own; the headers are for DeepSpeed's op builds.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12=3.12.3-* python3.12-venv=3.12.3-* python3.12-dev=3.12.3-* \
    && rm -rf /var/lib/apt/lists/* \
    && python3.12 -m venv /opt/venv \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin rlhfops

RUN pip install --no-cache-dir torch==2.13.0 --index-url "${TORCH_INDEX}"
# DeepSpeed ships only an sdist whose setup imports torch: build it against the torch above.
RUN pip install --no-cache-dir setuptools==80.9.0 wheel==0.45.1 ninja==1.13.0 \
    && DS_BUILD_OPS=0 pip install --no-cache-dir --no-build-isolation deepspeed==0.19.8

WORKDIR /app
COPY images/constraints.txt /tmp/constraints.txt
COPY pyproject.toml README.md ./
COPY configs ./configs
COPY src ./src
# Editable, so that rlhfops finds /app/configs (accelerate/zero3.yaml for trainer_job) next to its sources.
RUN pip install --no-cache-dir --constraint /tmp/constraints.txt --editable ".[gpu]"

# numeric, so Kubernetes can check runAsNonRoot
USER 10001
ENTRYPOINT ["rlhfops"]
CMD ["--help"]
