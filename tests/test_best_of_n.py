"""Best-of-N: exact selection and KL, adaptive N, the on-disk cache, and the `bon` stage end to end."""

import json
import math
import os

import pytest
import torch

import rlhfops.inference.best_of_n as bon_module
from rlhfops.annotation.pairs import build_preference_data
from rlhfops.config import GenerationConfig, load_config
from rlhfops.inference.best_of_n import (
    adaptive_best_of_n,
    best_of_n,
    best_of_n_kl,
    evaluate_best_of_n,
    hardness,
    select,
)
from rlhfops.inference.cache import BoNCache, cache_key, directory_version
from rlhfops.modeling import init_policy, save_policy
from rlhfops.reward.build import best_of_n_scorer
from rlhfops.reward.train import train_reward_models

GENERATION = GenerationConfig(max_new_tokens=12)
PROMPTS = ["q: 1+2?\n", "q: 3*4?\n", "q: 5-1?\n"]


def length(prompts, completions, **columns):
    return [float(len(c)) for c in completions]


def constant(prompts, completions, **columns):
    return [1.0] * len(completions)


@pytest.fixture(scope="module")
def policy():
    cfg = load_config("smoke")
    return init_policy(cfg)  # (tokenizer, untrained tiny Llama): varied, random-length samples


@pytest.fixture
def counted_generate(monkeypatch):
    """Patch `generate` in best_of_n with a wrapper that records each call's batch size and delegates."""
    calls, original = [], bon_module.generate

    def counting(model, tokenizer, prompts, *args, **kwargs):
        calls.append(len(prompts))
        return original(model, tokenizer, prompts, *args, **kwargs)

    monkeypatch.setattr(bon_module, "generate", counting)
    return calls


# ---- exact ---------------------------------------------------------------------------------------


def test_select_takes_the_argmax_and_breaks_ties_by_lowest_index():
    r = select("p", ["a", "bb", "cc", "d"], [1.0, 3.0, 3.0, 2.0])
    assert (r.best_index, r.best, r.scores) == (1, "bb", [1.0, 3.0, 3.0, 2.0])
    assert select("p", ["x", "y", "z"], [0.5, 0.5, 0.5]).best_index == 0


def test_a_nan_score_never_wins():
    nan = float("nan")
    assert select("p", ["a", "b", "c"], [nan, 1.0, 2.0]).best_index == 2
    assert select("p", ["a", "b", "c"], [2.0, nan, 1.0]).best_index == 0
    assert select("p", ["a", "b", "c"], [nan, -1.0, nan]).best_index == 1
    r = select("p", ["a", "b"], [nan, 0.0])
    assert math.isnan(r.scores[0]) and r.best == "b"  # the scores are reported as the scorer gave them
    with pytest.raises(ValueError, match=r"every one of the 3 Best-of-N scores is NaN for prompt 'q: 1\+1'"):
        select("q: 1+1", ["a", "b", "c"], [nan, nan, nan])
    with pytest.raises(ValueError, match="one score per candidate, got 1 for 2"):
        select("p", ["a", "b"], [1.0])


def test_analytic_kl():
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(2) == pytest.approx(math.log(2) - 0.5)
    assert best_of_n_kl(16) == pytest.approx(math.log(16) - 15 / 16)


def test_best_of_n_batches_generation_and_picks_the_argmax(policy, counted_generate):
    tokenizer, model = policy
    generator = torch.Generator().manual_seed(0)
    results = best_of_n(model, tokenizer, PROMPTS, 4, length, generation=GENERATION, generator=generator, batch_size=5)
    assert counted_generate == [5, 5, 2]  # 3 prompts x 4 samples, 5 sequences per call
    for prompt, r in zip(PROMPTS, results, strict=True):
        assert r.prompt == prompt and len(r.candidates) == 4
        assert r.scores == [float(len(c)) for c in r.candidates]
        longest = max(len(c) for c in r.candidates)
        assert r.best_index == [len(c) for c in r.candidates].index(longest) and r.best == r.candidates[r.best_index]
    flat = best_of_n(model, tokenizer, PROMPTS, 3, constant, generation=GENERATION, batch_size=64)
    assert [r.best_index for r in flat] == [0, 0, 0]


class KnownSpreads:
    """Stands in for CompositeReward.vectors: per-objective spreads looked up by prompt."""

    def __init__(self, spreads):
        self.spreads = spreads

    def vectors(self, prompts, completions):
        return {"spreads": torch.tensor([self.spreads[p] for p in prompts])}


def test_adaptive_n_gives_confident_prompts_one_sample_and_hard_ones_n(policy):
    tokenizer, model = policy
    composite = KnownSpreads({PROMPTS[0]: [0.1, 0.3], PROMPTS[1]: [0.9, 0.5], PROMPTS[2]: [0.5, 0.5]})
    bon = load_config("smoke", ["best_of_n.adaptive_signal=spread", "best_of_n.adaptive_spread=0.5"]).best_of_n
    results, counts = adaptive_best_of_n(
        model, tokenizer, PROMPTS, 6, length, hardness(bon, composite, length), generation=GENERATION, batch_size=8
    )
    assert counts == [1, 6, 1]  # mean spreads 0.2, 0.7, 0.5 (at the threshold: confident)
    assert [len(r.candidates) for r in results] == counts
    assert results[1].best == max(results[1].candidates, key=len)


def test_adaptive_n_by_score_gives_n_to_prompts_whose_first_sample_the_scorer_rates_low():
    bon = load_config("smoke", ["best_of_n.adaptive_signal=score", "best_of_n.adaptive_score=3"]).best_of_n
    hard = hardness(bon, composite=None, score_fn=length)  # the score signal never reads the ensembles
    assert hard(["a", "b", "c"], ["xx", "xxx", "xxxx"]) == [True, False, False]  # at the threshold: not hard


def test_best_of_n_scorer_flat_choice():
    cfg = load_config("smoke", ["best_of_n.scorer=prm"])
    with pytest.raises(ValueError, match="no process reward model"):
        best_of_n_scorer(cfg, {}, None)

    class HalfPRM:
        def score(self, prompts, completions, aggregation=None):
            return [0.5] * len(completions)

    assert best_of_n_scorer(cfg, {}, HalfPRM())(["q"], ["a"]) == [0.5]


# ---- cache ---------------------------------------------------------------------------------------


def test_cache_round_trip_and_misses(tmp_path):
    cache = BoNCache(tmp_path, max_bytes=10**6)
    key = cache_key("q: 1+1?\n", "policy-a", "reward-a", 4)
    assert cache.get(key) is None
    cache.put(key, {"best": "answer: 2", "scores": [0.5, 1.0]})
    assert cache.get(key) == {"best": "answer: 2", "scores": [0.5, 1.0]}
    assert cache.path(key).parent.name == key[:2]
    assert cache_key("q: 1+1?\n", "policy-a", "reward-a", 8) != key
    assert cache_key("q: 1+1?\n", "policy-b", "reward-a", 4) != key
    assert cache_key("q: 1+1?\n", "policy-a", "reward-b", 4) != key
    assert cache.get(cache_key("q: 1+1?\n", "policy-a", "reward-a", 8)) is None


def test_a_corrupt_entry_is_a_miss_and_is_removed(tmp_path):
    cache = BoNCache(tmp_path, max_bytes=10**6)
    key = cache_key("p", "a", "b", 1)
    cache.put(key, {"x": 1})
    cache.path(key).write_text('{"x": ')  # half a file
    assert cache.get(key) is None and not cache.path(key).exists()


def test_size_bound_evicts_least_recently_used(tmp_path):
    value = {"pad": "x" * 1000}  # ~1 KB per entry
    cache = BoNCache(tmp_path, max_bytes=3500)
    keys = [cache_key(f"p{i}", "a", "b", 1) for i in range(4)]
    now = os.stat(tmp_path).st_mtime
    for age, key in zip((30, 20, 10), keys[:3], strict=True):
        cache.put(key, value)
        os.utime(cache.path(key), (now - age, now - age))
    assert cache.get(keys[0]) is not None  # touched: now the most recently used
    cache.put(keys[3], value)
    assert cache.get(keys[1]) is None  # the least recently used went first
    assert all(cache.get(k) is not None for k in (keys[0], keys[2], keys[3]))
    assert cache.size_bytes() <= 3500


def test_directory_version_follows_the_weight_bytes(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.safetensors").write_bytes(b"abc")
    (tmp_path / "m" / "config.json").write_text("{}")
    first = directory_version(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text('{"x": 1}')
    assert directory_version(tmp_path / "m") == first  # only weights count
    (tmp_path / "m" / "model.safetensors").write_bytes(b"abd")
    assert directory_version(tmp_path / "m") != first
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors"):
        directory_version(tmp_path / "none")


def test_best_of_n_serves_cached_prompts_without_generating(policy, tmp_path, counted_generate):
    tokenizer, model = policy
    cache = BoNCache(tmp_path, max_bytes=10**6)
    kwargs = {"generation": GENERATION, "batch_size": 64, "cache": cache, "policy_version": "p", "reward_version": "r"}
    first = best_of_n(model, tokenizer, PROMPTS[:2], 3, length, **kwargs)
    assert counted_generate == [6]
    again = best_of_n(model, tokenizer, PROMPTS, 3, length, **kwargs)
    assert counted_generate == [6, 3]  # only the third prompt was new
    assert again[:2] == first
    best_of_n(model, tokenizer, PROMPTS, 3, length, **kwargs)
    assert counted_generate == [6, 3]


# ---- the `bon` stage on a smoke workspace --------------------------------------------------------

OVERRIDES = [
    "reward.objectives=[helpfulness, honesty]",
    "reward.members=2",
    "reward.max_steps=5",
    "reward.data.n_prompts=60",
    "reward.data.n_val_prompts=16",
    "scalarisation.weights={helpfulness: 0.5, honesty: 0.5}",
    "best_of_n.n_values=[1, 2, 4]",
    "best_of_n.n=4",
    "best_of_n.n_prompts=8",
]


def test_evaluate_best_of_n_on_a_smoke_workspace(tmp_path, counted_generate):
    cfg = load_config("smoke", OVERRIDES)
    tokenizer, model = init_policy(cfg)
    save_policy(model, tokenizer, cfg, tmp_path / "sft")
    build_preference_data(cfg, tmp_path / "prefs", policy=None)  # teacher responses only: fast
    train_reward_models(cfg, tmp_path / "prefs", tmp_path / "sft", tmp_path / "rm", progress=False)
    counted_generate.clear()

    out = tmp_path / "bon.json"
    report = evaluate_best_of_n(cfg, tmp_path / "sft", tmp_path / "rm", None, out, cache_dir=tmp_path / "cache")
    assert json.loads(out.read_text()) == report
    assert sum(counted_generate) == 8 * 4  # the largest N drawn once per prompt
    assert [row["n"] for row in report["curve"]] == [1, 2, 4]
    for row in report["curve"]:
        assert set(row) == {"n", "gold", "proxy", "samples_per_prompt", "samples", "kl"}
        assert row["samples_per_prompt"] == row["n"] and row["samples"] == 8 * row["n"]
        assert row["kl"] == pytest.approx(math.log(row["n"]) - (row["n"] - 1) / row["n"])
        assert 0 <= row["gold"] <= 1
    proxies = [row["proxy"] for row in report["curve"]]
    assert proxies == sorted(proxies)  # nested candidates: the best of more is never worse
    adaptive = report["adaptive"]
    assert set(adaptive) >= {"gold", "proxy", "samples", "share_of_gain", "share_of_samples", "hard_prompts"}
    assert adaptive["samples"] == 8 + 3 * adaptive["hard_prompts"]
    assert adaptive["share_of_samples"] == pytest.approx(adaptive["samples"] / 32)

    again = evaluate_best_of_n(cfg, tmp_path / "sft", tmp_path / "rm", None, out, cache_dir=tmp_path / "cache")
    assert again == report and sum(counted_generate) == 32  # every prompt served from the cache

    # adaptive N by the first sample's own score: a threshold above every score makes every prompt
    # hard (Best-of-4's pick), one below every score none (the first sample's)
    gold = {row["n"]: row["gold"] for row in report["curve"]}
    for threshold, n in ((1e9, 4), (-1e9, 1)):
        by_score = [*OVERRIDES, "best_of_n.adaptive_signal=score", f"best_of_n.adaptive_score={threshold}"]
        cfg = load_config("smoke", by_score)
        adaptive = evaluate_best_of_n(cfg, tmp_path / "sft", tmp_path / "rm", None, out, tmp_path / "cache")["adaptive"]
        assert adaptive["signal"] == "score" and adaptive["threshold"] == threshold
        assert adaptive["samples"] == 8 * n and adaptive["gold"] == gold[n]
