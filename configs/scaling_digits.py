"""Scaling-law demo on the digits: 20 small ViTs (4 widths x 4 amounts of data, plus a second
learning rate for the widest), then the fits, plots and report.

    python experiments/scaling/sweep.py --config configs/scaling_digits.py --out workdirs/scaling_digits
    python experiments/scaling/analyze.py --out workdirs/scaling_digits          # refit / re-plot only

Every run is configs/vit_digits.py (random-translation augmentation, label smoothing 0.1, AdamW,
cosine schedule) at batch 64, lr 5e-3, no drop-path, changed only in width (16-128; depth 2, heads of
32, MLP 2x width: 4.5k-265k non-embedding parameters) and in images seen (6-48 epochs of the 1,437
training digits: 8.4k-68k images); width 128 also at lr 2e-3. L is the plain cross-entropy on the 360
held-out digits at the end of each run. Measured on 2 shared CPU cores (load average 3-4): about 13
minutes of training plus about a minute of fitting (docs/scaling.md has the numbers); eval top-1 from
0.36 (width 16, 6 epochs) to 0.986 (width 128, 48 epochs, lr 2e-3).

What this demo can show: the machinery end to end (records, resumption, three laws with bootstrap
intervals, the compute-optimal frontier, the hold-out check, plots), and that on this tiny problem the
loss falls with both N and D and flattens with compute towards a floor, as Zhai et al. 2022 found
for ViTs. What it cannot show: exponents that transfer anywhere. N spans 60x and D 8x; D beyond one
epoch repeats the same 1,437 images (repeated data is worth less than fresh data, Muennighoff et al.
2023, so beta is not a fresh-data exponent); the floor mostly reflects label smoothing (a smoothed
model's eval cross-entropy stays near 0.1 or above); one learning rate serves widths 16-64 untuned;
and at the lowest losses the 360-image test set measures L to only about +-8% (one standard error),
which is coarser than the 5% hold-out goal. Use `--config.mode=star` for the one-axis-at-a-time
sweep of Alabdulmohsin et al. 2023 over width, depth, MLP size, data and learning rate.
"""
import os

import ml_collections

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config():
    c = ml_collections.ConfigDict()
    c.base_config = os.path.join(_HERE, "vit_digits.py")
    # Applied to the base config for every run (same syntax as --config.KEY=VALUE on the command line).
    c.overrides = [
        "input.batch_size=64",        # 22 steps per epoch: more, cheaper updates than at 128
        "optim.lr=5e-3",              # probed at 10 epochs: 5e-3 beat 2e-3 and 1e-2 at width 32, tied at 128
        "model.drop_path=0.0",        # <= 20 epochs do not overfit enough to need it
        "train.tensorboard=False",    # metrics.jsonl is enough; saves time per run
        "train.keep_checkpoints=1",
    ]

    c.mode = "grid"
    # 4 x 4 grid in (N, D): what the Chinchilla fit needs. Heads and MLP size follow the width.
    # Width 128 is also trained at lr 2e-3: at 5e-3 it trained worse than width 64 beyond 12 epochs
    # (train loss too), i.e. one learning rate does not suit every width. The analysis keeps the lower
    # loss per (N, D), the tuned-learning-rate loss that the laws describe.
    epochs = [6.0, 12.0, 24.0, 48.0]
    c.grid = [dict(width=[16, 32, 64, 128], depth=[2], epochs=epochs),
              dict(width=[128], depth=[2], epochs=epochs, lr=[2e-3])]
    # The "star" of Alabdulmohsin et al. 2023 (one axis at a time around a center shape); run with
    # --config.mode=star. Adds depth, MLP size and learning rate to what the grid varies.
    c.star = dict(center=dict(width=64, depth=2, mlp_ratio=2.0, epochs=12.0, lr=5e-3),
                  axes=dict(width=[16, 32, 128], depth=[1, 4], mlp_ratio=[1.0, 4.0],
                            epochs=[6.0, 24.0, 48.0], lr=[2e-3, 1e-2]))
    c.axis_keys = dict()          # more axes, e.g. dict(wd="optim.weight_decay")
    c.head_dim = 32               # heads = width // 32 (at least 1), as in the base config (128 / 4)
    c.mlp_ratio = 2.0             # MLP size = 2 x width, as in the base config (256 / 128)

    c.evals_per_run = 8           # learning-curve points per run
    c.checkpoints_per_run = 2     # resume granularity of an interrupted run
    c.logs_per_run = 25
    c.max_warmup_fraction = 0.2   # the base 50-step warmup is capped at 20% of a short run

    c.analysis = dict(
        loss_key="loss",          # final eval loss ("best_loss": lowest eval loss seen)
        n_key="N_nonembed",       # Kaplan et al. 2020 count non-embedding parameters
        holdout=3,                # fit without the 3 largest-compute runs, predict them
        n_boot=200,               # bootstrap resamples per law (95% percentile intervals)
        seed=0,
        title="Scaling laws: ViTs on digits",
    )
    return c
