"""`rlhfops serve | simulate-traffic | models | deploy`: serving and the canary (registered on `rlhfops.cli.app`)."""
