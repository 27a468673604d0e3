"""Collection (the `collect` stage): what a cycle annotates.

`responses.jsonl`, one record per response:

    {"prompt": "q: 2+3?\\n", "response": "2+3=5\\nanswer: 5", "source": "policy" | "interaction",
     "model_version": "sft", "feedback": 0.8 | null, "id": "..."}

- `policy`: k samples per prompt from the current policy on `collect.n_prompts` train prompts
  of the built-in task (drawn with seed `seed + cycle`, so each cycle sees other prompts) or of
  a Hugging Face data set (`collect.dataset`); empty samples are counted, not written.
- `interaction`: every interaction the canary deployment logged in the interaction store since
  the last collected cycle, with the version that served it and the user's feedback. Where the
  last cycle stopped is kept in its `collect.json` (`interactions_until` and the ids logged at
  that instant), so no interaction is collected twice or skipped.
"""

from __future__ import annotations

import hashlib
import math
import random
from pathlib import Path
from typing import Any

from rlhfops.chat import prompt_of
from rlhfops.config import Config
from rlhfops.files import atomic_write_json, read_json_file, read_jsonl, write_jsonl
from rlhfops.workspace import COLLECT_MANIFEST as MANIFEST
from rlhfops.workspace import RESPONSES, Workspace, is_model_dir

SOURCES = ("policy", "interaction")


def check_response(record: dict[str, Any]) -> str | None:
    """What is wrong with a collected-response record, or None."""
    for field in ("prompt", "response"):
        if not isinstance(record.get(field), str):
            return f"field '{field}' must be a string"
        if not record[field].strip():
            return f"field '{field}' is empty"
    if record.get("source") not in SOURCES:
        return f"field 'source' must be one of {', '.join(SOURCES)}"
    if not isinstance(record.get("model_version"), str):
        return "field 'model_version' must be a string"
    if not _number_or_none(record.get("feedback")):
        return "field 'feedback' must be a finite number or null"
    return None


def _number_or_none(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value))


def check_interaction(row: dict[str, Any]) -> str | None:
    """What is wrong with an interaction-store row for collection, or None. A row the router wrote is
    always fine; one written into the database by something else may hold text where a number goes."""
    if row.get("time") is None or not _number_or_none(row["time"]):
        return f"its time {row.get('time')!r:.40} is not a finite number"
    if not _number_or_none(row.get("feedback")):
        return f"its feedback {row.get('feedback')!r:.40} is not a finite number or empty"
    for field in ("prompt", "response", "version"):
        if not isinstance(row.get(field), str):
            return f"its {field} is not text"
    return None


def read_responses(path: str | Path) -> list[dict[str, Any]]:
    return read_jsonl(path, check_response)


def response_id(prompt: str, response: str, source: str, n: int) -> str:
    return hashlib.sha256(f"{source}\x00{n}\x00{prompt}\x00{response}".encode()).hexdigest()[:16]


def collection_prompts(cfg: Config, cycle: int) -> list[str]:
    """`collect.n_prompts` prompts for this cycle: task train prompts or data-set rows."""
    cc = cfg.collect
    if cc.dataset is None:
        from rlhfops.tasks import make_task

        return [ex.prompt for ex in make_task(cfg.task, seed=cfg.seed + cycle).examples("train", cc.n_prompts)]
    rows = load_prompt_rows(cc.dataset, cc.dataset_split)
    if cc.prompt_field not in rows.column_names:
        raise ValueError(
            f"data set '{cc.dataset}' has no column '{cc.prompt_field}' (columns: {', '.join(rows.column_names)})"
        )
    prompts = []
    for i, p in enumerate(rows[cc.prompt_field]):
        if isinstance(p, list):  # a conversation: its prompt string (`chat.prompt_of`)
            try:
                p = prompt_of(p)
            except ValueError as e:
                where = f"data set '{cc.dataset}' row {i}"
                raise ValueError(f"{where}: '{cc.prompt_field}' is not chat messages: {e}") from None
        if not isinstance(p, str) or not p.strip():
            raise ValueError(
                f"data set '{cc.dataset}' row {i}: '{cc.prompt_field}' must be non-empty text or chat messages"
            )
        prompts.append(p)
    order = list(range(len(prompts)))
    random.Random(cfg.seed + cycle).shuffle(order)
    return [prompts[i] for i in order[: cc.n_prompts]]


def load_prompt_rows(name: str, split: str):
    """A Hugging Face data set: a `save_to_disk` directory, a local JSON/JSONL/CSV/Parquet file, or a hub id."""
    import datasets

    path = Path(name)
    verbosity = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its loaders log what we report in one sentence
    try:
        if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise ValueError(f"data set '{name}' has no split '{split}' (splits: {', '.join(loaded)})")
                loaded = loaded[split]
        elif path.is_file():
            kind = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}.get(path.suffix)
            if kind is None:
                raise ValueError(f"cannot read prompts from '{path}': use a .jsonl, .json, .csv or .parquet file")
            # our reader names the line of a truncated or binary file
            if path.suffix == ".jsonl" and not read_jsonl(path, lambda record: None):
                raise ValueError(f"data set '{name}' holds no rows")
            loaded = datasets.load_dataset(kind, data_files=str(path), split="train")
        else:
            loaded = datasets.load_dataset(name, split=split)
    except ValueError as e:
        if str(e).startswith(("data set '", "cannot read prompts", str(path))):
            raise
        raise ValueError(f"cannot read prompts from data set '{name}': {_first_line(e)}") from None
    except Exception as e:  # datasets and pyarrow raise many kinds (generation, cast, parse, hub errors)
        raise ValueError(f"cannot read prompts from data set '{name}': {_first_line(e)}") from None
    finally:
        datasets.logging.set_verbosity(verbosity)
    if len(loaded) == 0:
        raise ValueError(f"data set '{name}' (split '{split}') holds no rows")
    return loaded


def _first_line(error: Exception) -> str:
    """An exception as one short line, from its root cause: the HF and Arrow messages run to pages."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    text = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    return text if len(text) <= 200 else text[:197] + "..."


def previous_state(ws: Workspace, cycle: int) -> tuple[float | None, list[str]]:
    """(interactions_until, ids logged at that instant) of the latest earlier cycle that collected."""
    for earlier in reversed([c for c in ws.cycle_numbers() if c < cycle]):
        manifest = ws.cycle_dir(earlier) / MANIFEST
        if manifest.exists():
            state = read_json_file(manifest, "collection manifest")
            until = state.get("interactions_until") if isinstance(state, dict) else "?"
            if not _number_or_none(until):
                raise ValueError(
                    f"collection manifest '{manifest}' says interactions were collected until {until!r:.40}, "
                    "not a time; set its interactions_until to the last collected interaction's unix time"
                )
            return until, state.get("interaction_ids_at_until", [])
    return None, []


def new_interactions(store, since: float | None, ids_at_since: list[str]) -> list[dict[str, Any]]:
    """Interactions logged since the last cycle (`since` is inclusive in the store; the ids already
    taken at that instant are left out)."""
    seen = set(ids_at_since)
    return [r for r in store.interactions(since=since) if not (r["time"] == since and r["id"] in seen)]


def collect(
    cfg: Config, ws: Workspace, policy_dir: str | Path, out_dir: str | Path, *, cycle: int, model_version: str = ""
) -> dict[str, Any]:
    """Write `out_dir/responses.jsonl` and `out_dir/collect.json`; return the counts.

    `model_version` labels the policy samples (default: the policy directory's name)."""
    from rlhfops.generation import sample_texts
    from rlhfops.modeling import load_decoder

    policy_dir, out_dir = Path(policy_dir), Path(out_dir)
    if not is_model_dir(policy_dir):
        raise FileNotFoundError(f"policy directory '{policy_dir}' does not exist")
    version = model_version or policy_dir.name
    k = cfg.collect.samples_per_prompt
    prompts = collection_prompts(cfg, cycle)
    tokenizer, model, hook = load_decoder(cfg, policy_dir)  # an offline-RL policy samples with its shift
    flat = [p for p in prompts for _ in range(k)]
    texts = sample_texts(model, tokenizer, flat, cfg.generation, seed=cfg.seed * 1000 + cycle, logits_hook=hook)
    records = [
        {
            "prompt": p,
            "response": t,
            "source": "policy",
            "model_version": version,
            "feedback": None,
            "id": response_id(p, t, "policy", n),
        }
        for n, (p, t) in enumerate(zip(flat, texts, strict=True))
        if t.strip()
    ]
    counts: dict[str, Any] = {
        "cycle": cycle,
        "prompts": len(prompts),
        "policy_samples": len(records),
        "empty_samples": len(flat) - len(records),
        "interactions": 0,
        "interactions_skipped_empty": 0,
        "interactions_skipped_invalid": [],
        "with_feedback": 0,
    }
    since, ids_at_since = previous_state(ws, cycle)
    until, ids_at_until = since, ids_at_since
    if cfg.collect.interactions:
        from rlhfops.serving.store import InteractionStore

        # the store the canary router writes (serving.store_url) unless collection names another
        store = InteractionStore.for_config(cfg.collect.store_url or cfg.serving.store_url, ws.root)
        try:
            logged = new_interactions(store, since, ids_at_since)
        finally:
            store.close()
        valid = []
        for r in logged:  # a bad row is skipped and named; the rows after it are collected as usual
            problem = check_interaction(r)
            if problem:
                counts["interactions_skipped_invalid"].append(f"interaction '{r.get('id')}' skipped: {problem}")
            else:
                valid.append(r)
        logged = valid
        for r in logged:
            if not (isinstance(r["prompt"], str) and r["prompt"].strip() and r["response"] and r["response"].strip()):
                counts["interactions_skipped_empty"] += 1
                continue
            records.append(
                {
                    "prompt": r["prompt"],
                    "response": r["response"],
                    "source": "interaction",
                    "model_version": r["version"],
                    "feedback": r["feedback"],
                    "id": r["id"],
                    "status": r["status"],
                    "time": r["time"],
                }
            )
            counts["interactions"] += 1
            counts["with_feedback"] += r["feedback"] is not None
        if logged:
            until = logged[-1]["time"]
            ids_at_until = [r["id"] for r in logged if r["time"] == until]
    write_jsonl(out_dir / RESPONSES, records)
    counts.update(model_version=version, interactions_since=since)
    state = {"interactions_until": until, "interaction_ids_at_until": ids_at_until}
    atomic_write_json(out_dir / MANIFEST, {**counts, **state})
    return counts
