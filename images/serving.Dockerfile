# The runtime image serving the policy: `rlhfops serve` (router + stable + canary, OpenAI-compatible).
# make images builds it on the runtime image it has just built:
#   docker build -f images/serving.Dockerfile --build-arg RUNTIME_IMAGE=<registry>/runtime:<tag> .
ARG RUNTIME_IMAGE=ghcr.io/rlhfops/runtime:0.1.0
FROM ${RUNTIME_IMAGE}

# By default the router listens on serving.router_port (8000); a container must bind all interfaces, not
# loopback. Kubernetes ignores HEALTHCHECK (it has probes); docker run uses it.
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]

# numeric, so Kubernetes can check runAsNonRoot
USER 10001
# The entry point is the CLI, so KServe's ServingRuntime can pass `serve --model /mnt/models --port 8080`.
ENTRYPOINT ["rlhfops"]
CMD ["serve", "--workspace", "/workspace", "--set", "serving.host=0.0.0.0"]
