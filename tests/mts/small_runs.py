"""Settings shared by the trainer and feature tests: runs of two short epochs on a small pool."""

from __future__ import annotations

from mts.config import RunConfig


def make_small(config: RunConfig, **changes: object) -> RunConfig:
    """Shrink `config` to two short epochs with GSNR measured every epoch, then apply `changes`.

    A change is named `section__field`, for example `pool__batch_size=64`.
    """
    config.pool.batch_size = 128
    config.mts.meta_batch_size = 32
    config.train.epochs = 2
    config.train.threads = 1
    config.gsnr.every_epochs = 1
    config.gsnr.draws = 4
    config.gsnr.per_sample_batch = 32
    for key, value in changes.items():
        section, name = key.split("__")
        setattr(getattr(config, section), name, value)
    return config
