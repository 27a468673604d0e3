"""Serving: OpenAI-compatible server, canary router, interaction store, gate, KServe control."""
