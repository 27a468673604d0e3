# CPU image for the light stages (collect, annotate, version data, evaluate, gate, deploy) and the
# base of the serving image. Build from the repository root: docker build -f images/runtime.Dockerfile .
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/tmp/huggingface \
    WANDB_MODE=offline

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin rlhfops
WORKDIR /app

# torch first and from the CPU index: the largest layer, reused until its pin changes.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

COPY images/constraints.txt /tmp/constraints.txt
COPY pyproject.toml README.md ./
COPY configs ./configs
COPY src ./src
# Editable, so that rlhfops finds /app/configs (tiny, smoke, accelerate) next to its sources.
RUN pip install --no-cache-dir --constraint /tmp/constraints.txt --editable .

# numeric, so Kubernetes can check runAsNonRoot
USER 10001
ENTRYPOINT ["rlhfops"]
CMD ["--help"]
