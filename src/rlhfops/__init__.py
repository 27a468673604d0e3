"""rlhfops: iterative RLHF as a Kubeflow pipeline, with a built-in exactly checkable task."""

__version__ = "0.1.0"
