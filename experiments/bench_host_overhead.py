"""Host overhead of the train loop: the steady-state step time of a real training run (data pipeline,
device feed, late metric fetch, logging: ``vitjax.training.loop``) next to the bare compiled step
called back to back on one batch, in the same process.

    python experiments/bench_host_overhead.py                          # the digits demo, 120 steps
    python experiments/bench_host_overhead.py --config configs/clip_digits.py --steps 60

The run's step time is the median of its logged ``train/step_time`` windows (compile, first step and
evaluations excluded, as the trainer logs them); the bare step's is the median over chunks of
``--bare_steps`` dispatches ended by one ``block_until_ready``. Goal: the run within 5% of the bare step.
The two are measured back to back ``--repeats`` times and the median ratio of those pairs is the
figure: a shared machine's speed drifts over tens of seconds.

On a CPU the "device" is the same two cores the data pipeline runs on, so the pipeline's own CPU time
per batch cannot overlap the step as it does on an accelerator (the digits demo: 0.25 ms per 128
images on the in-memory path, 9-32 ms with per-example ops). A further run therefore replays 8
batches read before training from memory (the same loop, metrics, device feed and logging, without
the pipeline's CPU work): the loop's own overhead. Its line and the pipeline's measured cost per
batch are printed too.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _step_times(workdir: str) -> list[float]:
    recs = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return [r["train/step_time"] for r in recs if "train/step_time" in r]


class _State(dict):
    """A grain iterator state that grain's checkpoint handler can also read as JSON bytes (it calls
    ``get_state().decode()`` on iterators that are not grain's own)."""

    def decode(self) -> str:
        return json.dumps(self)


class _Replay:
    """The run's grain iterator, but ``next`` cycles through ``n`` batches read from it up front
    (its state, for checkpoints, stays the real iterator's)."""

    def __init__(self, it, n: int):
        self.it, self.batches, self.i = it, [next(it) for _ in range(n)], 0

    def __iter__(self):
        return self

    def __next__(self):
        self.i += 1
        return self.batches[(self.i - 1) % len(self.batches)]

    def get_state(self):
        return _State(self.it.get_state())

    def set_state(self, state):
        self.it.set_state(state)

    def close(self):
        self.it.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/vit_digits.py")
    ap.add_argument("--steps", type=int, default=120, help="train steps of the real run")
    ap.add_argument("--log_every", type=int, default=20, help="steps per timing window of the real run")
    ap.add_argument("--bare_steps", type=int, default=20, help="steps per timed chunk of the bare step")
    ap.add_argument("--chunks", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3, help="back-to-back (real run, bare step) pairs")
    args, overrides = ap.parse_known_args()

    import jax
    import numpy as np

    from vitjax import config_defaults
    from vitjax import sharding as sh
    from vitjax.config import apply_overrides, load_config_file
    from vitjax.data import train_iterator
    from vitjax.training.trainer import Trainer

    cfg = apply_overrides(load_config_file(args.config), [
        f"--config.train.total_steps={args.steps}", f"--config.train.log_every_steps={args.log_every}",
        "--config.train.eval_every_steps=0", "--config.train.checkpoint_every_steps=0",
        "--config.train.tensorboard=False", *overrides])
    workdirs = []

    def real_run():
        workdirs.append(tempfile.mkdtemp(prefix="vitjax_host_"))
        trainer = Trainer(cfg, workdirs[-1])
        trainer.train()
        return trainer, _step_times(workdirs[-1])

    try:
        tr, run_times = real_run()

        # the bare step: the compiled program of the run, on one real batch, nothing else on the host
        it = train_iterator(tr.train_source, cfg.input.train_ops, tr.batch_size, seed=1, num_threads=0,
                            batch_ops=config_defaults.get(cfg.input, "input", "batch_ops"))
        batch = sh.host_local_to_global(next(it), tr.mesh, tr.rules)
        it.close()
        step = tr.compiled_train_step(batch)
        state = tr.state
        state, m = step(state, batch)
        jax.block_until_ready(m)

        def bare_chunks():
            nonlocal state
            out = []
            for _ in range(args.chunks):
                t0 = time.perf_counter()
                for _ in range(args.bare_steps):
                    state, m = step(state, batch)
                jax.block_until_ready((state, m))
                out.append((time.perf_counter() - t0) / args.bare_steps)
            return out

        # Real run and bare step measured back to back, --repeats times: this machine's speed drifts
        # over tens of seconds, so each ratio compares neighbours in time.
        pairs = [(run_times, bare_chunks())]
        for _ in range(args.repeats - 1):
            pairs.append((real_run()[1], bare_chunks()))

        # the same run with its batches replayed from memory: the loop without the pipeline's CPU work
        import vitjax.training.trainer as trainer_mod
        real_iterator = trainer_mod.train_iterator
        trainer_mod.train_iterator = lambda *a, **k: _Replay(real_iterator(*a, **k), 8)
        try:
            _, replay_times = real_run()
        finally:
            trainer_mod.train_iterator = real_iterator
        replay_bare = bare_chunks()

        # the pipeline alone: CPU time per batch, as the run's iterator produces them
        it = train_iterator(tr.train_source, cfg.input.train_ops, tr.batch_size, seed=2,
                            num_threads=config_defaults.get(cfg.input, "input", "num_threads"),
                            batch_ops=config_defaults.get(cfg.input, "input", "batch_ops"))
        next(it)
        t0 = time.perf_counter()
        for _ in range(40):
            next(it)
        pipeline_t = (time.perf_counter() - t0) / 40
        it.close()
    finally:
        for wd in workdirs:
            shutil.rmtree(wd, ignore_errors=True)
    print(f"{args.config}: global batch {tr.batch_size}, {args.steps} steps, mesh {dict(tr.mesh.shape)}, "
          f"{jax.devices()[0].platform}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'':34s} {'median step':>12s}   windows / chunks (ms)")
    ratios = []
    for i, (run, bare) in enumerate(pairs):
        run_t, bare_t = float(np.median(run)), float(np.median(bare))
        ratios.append(run_t / bare_t)
        print(f"{f'training run {i + 1} (trainer loop)':34s} {1e3 * run_t:10.2f}ms   "
              + " ".join(f"{1e3 * t:.1f}" for t in run))
        print(f"{'bare compiled step, same batch':34s} {1e3 * bare_t:10.2f}ms   "
              + " ".join(f"{1e3 * t:.1f}" for t in bare) + f"   -> run / bare {ratios[-1]:.3f}")
    replay_t, replay_bare_t = float(np.median(replay_times)), float(np.median(replay_bare))
    print(f"{'training run, batches replayed':34s} {1e3 * replay_t:10.2f}ms   "
          + " ".join(f"{1e3 * t:.1f}" for t in replay_times))
    print(f"{'bare compiled step, same batch':34s} {1e3 * replay_bare_t:10.2f}ms   "
          + " ".join(f"{1e3 * t:.1f}" for t in replay_bare))
    print(f"{'data pipeline alone, per batch':34s} {1e3 * pipeline_t:10.2f}ms   (CPU time the run adds on a CPU host)")
    print(f"run / bare: {float(np.median(ratios)):.3f}, the median of {len(ratios)} back-to-back pairs "
          f"({', '.join(f'{r:.3f}' for r in ratios)}; goal <= 1.05); replayed run / bare: "
          f"{replay_t / replay_bare_t:.3f} (the loop's own overhead)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
