"""Answering machine detection on the fixture set: accuracy per class and time to a verdict.

Every callee of ``tests/amd_audio.py`` (people saying a short phrase, machines greeting with and
without a beep, a silent line, and two cuts of real speech when sip-tester is installed) is run
through ``ringflow.media.amd`` at each noise level, in both modes, with several noise seeds;
then the held-out callees, which the detector's constants were not tuned on.
Prints, per mode and class, how many got the right verdict, the time to the verdict (median and
p95, milliseconds after the answer) and the detector's CPU per second of audio.

    .venv/bin/python bench/amd.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ringflow.media.amd import FRAME_SAMPLES, Detector, Mode
from tests.amd_audio import NOISE_DB, Sample, held_out, noisy, samples


def p95(values: list[int]) -> int:
    """The 95th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="noise seeds per level")
    args = parser.parse_args()
    for title, found in (("tuned on", samples()), ("held out", held_out())):
        print(
            f"\n## {title}: {len(found)} callees x {len(NOISE_DB)} noise levels x "
            f"{args.seeds} seeds"
        )
        run(found, args.seeds)


def run(found: list[Sample], seeds: int) -> None:
    """Print the table of each mode for ``found``."""
    step = FRAME_SAMPLES * 2
    for mode in Mode:
        right: dict[str, list[bool]] = collections.defaultdict(list)
        times: dict[str, list[int]] = collections.defaultdict(list)
        wrong: list[str] = []
        cpu = audio = 0.0
        for sample in found:
            expected = sample.expected(mode)
            label = f"{sample.kind} ({expected.value})"
            for level in NOISE_DB:
                for seed in range(seeds):
                    pcm = noisy(sample.pcm, level, seed)
                    detector = Detector(mode)
                    started = time.perf_counter()
                    decision = None
                    for at in range(0, len(pcm) - step + 1, step):
                        decision = detector.feed(pcm[at : at + step])
                        if decision is not None:
                            break
                    decision = decision or detector.finish()
                    cpu += time.perf_counter() - started
                    audio += detector.ms / 1000
                    right[label].append(decision.result == expected)
                    times[label].append(decision.ms)
                    if decision.result != expected:
                        wrong.append(
                            f"{sample.name} at {level} dB: {decision.result.value} "
                            f"({decision.reason})"
                        )
        print(f"\n{mode.value}")
        print("| class | right | accuracy | median ms | p95 ms |")
        print("|---|---|---|---|---|")
        total = sum(len(v) for v in right.values())
        for label, hits in right.items():
            print(
                f"| {label} | {sum(hits)}/{len(hits)} | {100 * sum(hits) / len(hits):.1f}% | "
                f"{statistics.median(times[label]):.0f} | {p95(times[label])} |"
            )
        print(
            f"all: {sum(sum(v) for v in right.values())}/{total}; "
            f"CPU {1e3 * cpu / audio:.2f} ms per second of audio"
        )
        for line in wrong:
            print("  wrong:", line)


if __name__ == "__main__":
    main()
