"""Write prompts.jsonl: 300 distinct conversion prompts whose answers need no rounding, with their
reference responses and splits (240 train, 30 val, 30 test). Run once; the output is committed:

    python examples/unit_conversion/make_prompts.py
"""

import json
import random
from decimal import Decimal

from task import PROMPTS, UNITS, prompt_text, solve  # run as a script, its own directory is on sys.path

N_PROMPTS, N_VAL, N_TEST = 300, 30, 30
AMOUNTS = [Decimal(n) for n in range(1, 21)] + [Decimal(t) for t in ("0.5", "1.5", "2.5", "3.5", "0.25", "7.5")]


def main() -> None:
    rng = random.Random(0)
    quantities = sorted({quantity for quantity, _ in UNITS.values()})
    prompts: dict[str, None] = {}
    while len(prompts) < N_PROMPTS:
        quantity = rng.choice(quantities)
        src, dst = rng.sample([unit for unit, (q, _) in UNITS.items() if q == quantity], 2)
        amount = rng.choice(AMOUNTS)
        if amount * UNITS[src][1] / UNITS[dst][1] == Decimal(solve(prompt_text(amount, src, dst)).answer):
            prompts[prompt_text(amount, src, dst)] = None  # only answers that need no rounding
    splits = ["test"] * N_TEST + ["val"] * N_VAL + ["train"] * (N_PROMPTS - N_TEST - N_VAL)
    rows = [
        {"prompt": p, "response": solve(p).reference, "split": split} for p, split in zip(prompts, splits, strict=True)
    ]
    PROMPTS.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"wrote {len(rows)} prompts to {PROMPTS}")


if __name__ == "__main__":
    main()
