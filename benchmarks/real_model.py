"""Every command path on a real pretrained model at tiny size: wall time, peak memory, a key result.

    python benchmarks/real_model.py [--workspace DIR] [--set KEY=VALUE ...]
                                    [--out workspace/bench/real_model.json]

Prepares SmolLM2-135M-Instruct once (`rlhfops.real_model`, cached), then runs the `rlhfops` CLI
itself (`python -m rlhfops.cli <command> --config smoke --json`), one fresh process per command,
in dependency order in one scratch workspace:

    sft -> eval -> train-rm -> train-prm (and its skip on examples/unit_conversion, a task without
    steps) -> train-policy ppo, grpo, rloo -> offline -> bon -> serve

`serve --model <the SFT policy>` listens on loopback; one chat completion goes through it with the
official `openai` client, and its `usage.prompt_tokens` is checked against the chat template's token
count. Sizes start from configs/smoke.yaml with `SIZES` on top (tiny: a few steps, a few prompts,
short generations); `--set` overrides any key after them, for every command. Each command's peak
resident set size is that process's own (`os.wait4`'s rusage: imports, models, optimizer,
activations); train-policy and offline include the gold evaluation of the SFT policy and of their
result that those commands print. The load average is read before and after: the numbers are only
comparable at the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlhfops.files import atomic_write_json
from rlhfops.real_model import prepare_real_model

ROOT = Path(__file__).resolve().parents[1]  # the CLI runs here, so that `examples` imports
EXAMPLE_CONFIG = "examples/unit_conversion/config.yaml"  # a task without steps: train-prm's skip
# Every command reads the same two objectives, judged per response by the built-in task.
COMMON = [
    "eval.greedy=true",
    "eval.n_test=4",
    "generation.max_new_tokens=32",
    "generation.batch_size=8",
    "reward.objectives=[helpfulness, conciseness]",
    "reward.members=1",
    "scalarisation.weights={helpfulness: 0.5, conciseness: 0.5}",
]
PPO = ["policy.eval_every=2", "policy.eval_prompts=4"]  # keys GRPO / RLOO reject
POLICY = ["policy.steps=2", "policy.prompts_per_step=4", "policy.max_new_tokens=24", "policy.lr=5e-6"]
SIZES = {
    "sft": ["task.n_train=32", "sft.batch_size=4", "sft.max_length=128", "sft.logging_steps=1", "sft.lr=2e-5"]
    + ["sft.max_steps=3"],
    "eval": [],
    "train-rm": ["reward.max_steps=2", "reward.batch_size=4", "reward.max_length=128", "reward.lr=3e-5"]
    + ["reward.data.n_prompts=8", "reward.data.n_val_prompts=8", "reward.data.responses_per_prompt=2"],
    "train-prm": ["prm.max_steps=2", "prm.batch_size=4", "prm.max_length=128", "prm.lr=3e-5"]
    + ["prm.n_prompts=8", "prm.n_val_prompts=8"],
    "train-policy ppo": [*POLICY, *PPO, "policy.algorithm=ppo"],
    "train-policy grpo": [*POLICY, "policy.group_size=2", "policy.algorithm=grpo"],
    "train-policy rloo": [*POLICY, "policy.group_size=2", "policy.algorithm=rloo"],
    "offline": ["offline.n_prompts=4", "offline.samples_per_prompt=2", "offline.max_steps=2", "offline.lr=3e-5"]
    + ["offline.batch_size=4", "offline.max_length=128"],
    "bon": ["best_of_n.n_values=[1, 2]", "best_of_n.n=2", "best_of_n.n_prompts=4", "best_of_n.batch_size=8"],
}
CHAT = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 2+3?"}]
CHAT_MAX_TOKENS = 16
ENV = {  # no W&B runs, no hub, no tokenizer threads; a wide console for the one line read as text
    "WANDB_MODE": "disabled",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "COLUMNS": "200",
    "PYTHONUNBUFFERED": "1",
}


def _score(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _policy_result(out: dict[str, Any]) -> str:
    (start, before), (name, after) = out.items()
    return f"gold composite {start} {_score(before['gold_composite'])} -> {name} {_score(after['gold_composite'])}"


SUMMARIES: dict[str, Callable[[dict[str, Any]], str]] = {
    "sft": lambda o: f"loss {o['first_loss']:.3f} -> {o['final_loss']:.3f} ({o['steps']} steps)",
    "eval": lambda o: (
        f"gold composite {_score(o['gold_composite'])}, solve accuracy "
        f"{_score(o.get('solve_accuracy'))} ({o['n']} greedy responses)"
    ),
    "train-rm": lambda o: ", ".join(
        f"{obj} val accuracy {s['mean_member_accuracy']:.3f} ({s['pairs']} pairs)"
        for obj, s in o.items()
        if isinstance(s, dict) and "pairs" in s
    ),
    "train-prm": lambda o: f"step accuracy {_score(o['step_accuracy'])} ({o['n_steps']} val steps)",
    "train-policy ppo": _policy_result,
    "train-policy grpo": _policy_result,
    "train-policy rloo": _policy_result,
    "offline": _policy_result,
    "bon": lambda o: (
        ", ".join(f"N={r['n']} gold {_score(r['gold'])}" for r in o["curve"]) + f" ({o['n_prompts']} prompts)"
    ),
}


def run_child(argv: list[str], log_dir: Path, name: str) -> tuple[int, float, float, str, str]:
    """One command in a fresh process: (exit code, wall s, peak RSS MiB, stdout, stderr)."""
    out, err = log_dir / f"{name}.out", log_dir / f"{name}.err"
    with out.open("w") as fo, err.open("w") as fe:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=fo, stderr=fe, env={**os.environ, **ENV})
        code, seconds, rss = wait_child(proc, start)
    return code, seconds, rss, out.read_text(), err.read_text()


def wait_child(proc: subprocess.Popen, start: float) -> tuple[int, float, float]:
    """Reap `proc`: (exit code, wall s since start, its own peak RSS in MiB; Linux reports KiB)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - start, usage.ru_maxrss / 1024


def cli(command: str, workspace: Path, overrides: list[str], config: str = "smoke", json_out: bool = True) -> list[str]:
    sets = [f"--set={o}" for o in overrides]
    return [sys.executable, "-m", "rlhfops.cli", *command.split()[:1], "--config", config, "--workspace",
            str(workspace), *sets, *(["--json"] if json_out else [])]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_chat(workspace: Path, overrides: list[str], log_dir: Path) -> dict[str, Any]:
    """`rlhfops serve --model <SFT policy>` on loopback, one chat completion through the official
    openai client, then Ctrl-C; the reply, its usage against the chat template, and the process's cost."""
    import openai
    from transformers import AutoTokenizer

    policy = workspace / "models" / "sft"
    argv = [*cli("serve", workspace, overrides), "--model", str(policy), "--port", str(free_port()), "--version", "sft"]
    err = (log_dir / "serve.err").open("w")
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True, env={**os.environ, **ENV})
    lines: list[str] = []
    for line in proc.stdout:  # `--json` prints the URLs, then the server runs until SIGINT
        lines.append(line)
        if line.rstrip() == "}":
            break
    reply = None
    try:
        url = json.loads("".join(lines))["server"]
        client = openai.OpenAI(base_url=url + "/v1", api_key="none")
        asked = time.perf_counter()
        reply = client.chat.completions.create(model="sft", messages=CHAT, max_tokens=CHAT_MAX_TOKENS, temperature=0)
        request_s = time.perf_counter() - asked
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        code, seconds, rss = wait_child(proc, start)
        err.close()
    tokenizer = AutoTokenizer.from_pretrained(policy)
    template = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=True, return_dict=True)
    return {
        "code": code,
        "seconds": seconds,
        "peak_rss_mib": rss,
        "output": {
            "messages": CHAT,
            "reply": reply.choices[0].message.content,
            "prompt_tokens": reply.usage.prompt_tokens,
            "completion_tokens": reply.usage.completion_tokens,
            "template_tokens": len(template["input_ids"]),
            "request_seconds": round(request_s, 2),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, help="scratch workspace (kept); default: a temporary one")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE after the sizes")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    start = time.perf_counter()
    try:
        model_dir = prepare_real_model()
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    record: dict[str, Any] = {
        "model": str(model_dir),
        "prepare_seconds": round(time.perf_counter() - start, 1),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "common": COMMON,
        "commands": {},
    }
    with tempfile.TemporaryDirectory(prefix="rlhfops-real-") as tmp:
        workspace = args.workspace or Path(tmp) / "workspace"
        log_dir = Path(tmp)
        base = [f"model.name_or_path={model_dir}", *COMMON]
        rows = []

        def report(name: str, entry: dict[str, Any], result: str) -> None:
            entry = {**entry, "seconds": round(entry["seconds"], 1), "peak_rss_mib": round(entry["peak_rss_mib"])}
            record["commands"][name] = {**entry, "result": result}
            rows.append((name, entry["seconds"], entry["peak_rss_mib"], result))
            print(f"{name:22s} {entry['seconds']:7.1f} s {entry['peak_rss_mib']:6d} MiB  {result}", flush=True)

        plan = [(name, cli(name, workspace, [*base, *sizes, *args.overrides]), True) for name, sizes in SIZES.items()]
        # train-prm on a task without steps: its one line, read as the person sees it
        skip = cli("train-prm", workspace, [f"model.name_or_path={model_dir}", *args.overrides], EXAMPLE_CONFIG, False)
        plan.insert(4, ("train-prm (no steps)", skip, False))
        for name, argv, json_out in plan:
            code, seconds, rss, out, err = run_child(argv, log_dir, name.replace(" ", "-"))
            entry = {"argv": argv[3:], "code": code, "seconds": seconds, "peak_rss_mib": rss}
            if code != 0:
                report(name, {**entry, "stderr": err[-4000:]}, f"FAILED (exit {code})")
                print(err[-4000:], file=sys.stderr)
                continue
            if not json_out:
                report(name, entry, " ".join(out.split()))
                continue
            output = json.loads(out)
            report(name, {**entry, "output": {k: v for k, v in output.items() if k != "samples"}},
                   SUMMARIES[name](output))  # fmt: skip
        try:
            served = serve_chat(workspace, [*base, *args.overrides], log_dir)
        except Exception as e:  # noqa: BLE001 - the table reports it beside the other commands
            served = {"code": -1, "seconds": 0.0, "peak_rss_mib": 0.0, "output": {"error": repr(e)}}
        o = served["output"]
        if served["code"] == 0 and "reply" in o:
            same = "=" if o["prompt_tokens"] == o["template_tokens"] else "!="
            result = f"reply {o['reply']!r}, prompt_tokens {o['prompt_tokens']} {same} template {o['template_tokens']}"
        else:
            result = f"FAILED: {o.get('error', (log_dir / 'serve.err').read_text()[-2000:])}"
        report("serve + chat completion", served, result)

    record["load_after"] = [round(x, 2) for x in os.getloadavg()]
    record["total_seconds"] = round(time.perf_counter() - start, 1)
    print()
    print("| command | wall s | peak RSS MiB | result |")
    print("|---|--:|--:|---|")
    for name, seconds, rss, result in rows:
        print(f"| {name} | {seconds:.1f} | {rss} | {result} |")
    print()
    print(f"model {model_dir}; {record['machine']}; load average (1, 5, 15 min) {record['load_before']} before, "
          f"{record['load_after']} after; {record['total_seconds']:.0f} s in all")  # fmt: skip
    if args.out:
        atomic_write_json(args.out, record)
        print(f"wrote {args.out}")
    failed = [n for n, c in record["commands"].items() if c["code"] != 0 or "FAILED" in c["result"]]
    if failed:
        raise SystemExit(f"error: {', '.join(failed)} failed on the real model (stderr in {args.out or 'the output'})")


if __name__ == "__main__":
    main()
