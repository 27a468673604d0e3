#!/usr/bin/env bash
# The example task with the real model as policy, annotated by an LLM judge: the same real model
# served by `rlhfops serve` on loopback (annotation.judge in real_model.yaml: two worked verdicts per
# objective), one cycle at smoke size. Run from the repository root after `make real-model`:
#     bash examples/unit_conversion/llm_judge_smoke.sh [WORKSPACE]
# Then <WORKSPACE>/cycles/0001/annotate.json says how many verdicts were labelled and how many stayed
# unlabelled (unparsable), and pairs-*.jsonl hold the pairs the labelled ones made.
set -euo pipefail
WS=${1:-workspace-llm-judge}
CONFIG=examples/unit_conversion/real_model.yaml
RLHFOPS=${RLHFOPS:-rlhfops}
MODEL=$(python -m rlhfops.real_model)
PORT=8011
"$RLHFOPS" serve --model "$MODEL" --port "$PORT" --version judge -c "$CONFIG" \
  --set serving.max_prompt_chars=8192 --set serving.max_tokens=64 &
JUDGE=$!
trap 'kill "$JUDGE" 2>/dev/null; wait "$JUDGE" 2>/dev/null || true' EXIT
for _ in $(seq 300); do
  curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
  kill -0 "$JUDGE" 2>/dev/null || { echo "error: the judge server exited" >&2; exit 1; }
  sleep 1
done
"$RLHFOPS" run -c "$CONFIG" -w "$WS" --cycles 1 \
  --set annotation.judge.kind=llm \
  --set sft.max_steps=4 --set collect.n_prompts=8 --set collect.samples_per_prompt=4 \
  --set reward.max_steps=2 --set reward.data.n_prompts=8 --set reward.data.n_val_prompts=4 \
  --set policy.steps=1 --set policy.prompts_per_step=4 --set policy.eval_prompts=4 \
  --set eval.n_test=4 --set pipeline.eval_prompts=4 --set pipeline.simulate=false
