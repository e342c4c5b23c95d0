"""Configuration of one MTS training run, as plain dataclasses.

These dataclasses are the schema: `sweep` registers them with Hydra's ConfigStore, so a YAML file
or a command-line override with an unknown key or a wrong type is rejected before training, and
`mts` itself stays usable from plain Python without Hydra.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

METHODS = ("uniform", "mwnet", "l2rw", "oracle", "mts")
MODELS = ("mlp", "cnn")
META_GRADIENTS = ("exact", "finite_difference")
OPTIMIZERS = ("adam", "adamw", "sgd")
POSITION_REPRESENTATIONS = ("warmup", "raw", "embeddings")


@dataclasses.dataclass
class TaskConfig:
    """The task to build and the sizes of its splits."""

    name: str = "mnist1d_shift"  # mnist1d_shift | digits_synth | file
    seed: int = 0  # seed of the data generation; the same seed gives byte-identical arrays
    cache_dir: Optional[str] = None  # where built tasks are cached; None: $MTSWEEP_CACHE or ~/.cache/mtsweep
    path: Optional[str] = None  # the .npz or .parquet file of the `file` task
    pool_size: int = 6000  # synthetic pool samples
    meta_size: int = 100  # real meta samples (the meta-gradient only)
    val_size: int = 500  # real validation samples (selection and sweep objective)
    test_size: int = 800  # real test samples (reported only)
    seed_size: int = 300  # digits_synth: real samples that fit the generators, kept apart
    # Pool mixture: generator name -> fraction of the pool; empty means the task's default mixture.
    mixture: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ModelConfig:
    """The classifier trained on the weighted pool."""

    name: str = "mlp"  # mlp | cnn
    hidden: list[int] = dataclasses.field(default_factory=lambda: [256, 256])  # MLP hidden widths
    channels: list[int] = dataclasses.field(default_factory=lambda: [32, 64])  # CNN channels per block
    kernel_size: int = 5  # CNN kernel width
    batch_norm: bool = False  # BatchNorm after each hidden layer (the virtual forward uses eval mode)


@dataclasses.dataclass
class PoolConfig:
    """Batching of the weighted pool."""

    batch_size: int = 512  # pool batch N; a larger N raises the meta-gradient GSNR (Du, Zhao and Li, 2026)


@dataclasses.dataclass
class MTSConfig:
    """The meta-network and the bi-level step."""

    features: list[str] = dataclasses.field(default_factory=lambda: ["loss", "class"])  # feature groups
    hidden: list[int] = dataclasses.field(default_factory=lambda: [100, 100])  # meta-network hidden widths
    embedding_dim: int = 8  # width of the learned class and source embeddings
    lr: float = 3e-3  # meta learning rate beta (AdamW on phi)
    weight_decay: float = 0.0  # AdamW weight decay on phi
    virtual_lr: float = 0.1  # fixed virtual step size alpha, independent of the lr schedule
    meta_batch_size: int = 100  # real meta samples per meta-gradient
    interval: int = 1  # update phi every `interval` steps
    gradient: str = "exact"  # exact | finite_difference
    fd_radius: float = 0.01  # finite difference: eps = fd_radius / |v|
    separate_batch: bool = False  # draw a second pool batch for the meta-gradient
    warmup_epochs: int = 0  # epochs of uniform weights before the meta-network acts
    eps: float = 1e-4  # the weight sum is floored at eps * N
    init_bias: float = 0.0  # initial output bias of the meta-network; sigmoid(0) = 0.5
    # Representation of the `position` group: warmup (penultimate layer of the warm-up classifier),
    # raw (the inputs) or embeddings (the task's own, e.g. from a file task).
    position_representation: str = "warmup"
    position_k: int = 10  # neighbours of the kNN and top-k columns of position and online_position
    feature_warmup_epochs: int = 5  # epochs of the unweighted warm-up classifier behind offline groups


@dataclasses.dataclass
class GSNRConfig:
    """Cadence and precision of the meta-gradient GSNR measurement."""

    enabled: bool = True
    every_epochs: int = 20  # measure at the end of every n-th epoch and of the last one; keeps GSNR near 5% of a trial
    draws: int = 8  # K independent (pool batch, meta batch) pairs per measurement
    per_sample_batch: int = 512  # pool samples for the per-sample (vmap) estimate; resolves GSNR down to ~1/n


@dataclasses.dataclass
class TrainConfig:
    """The classifier's optimizer and schedule."""

    epochs: int = 60  # passes over the pool
    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 3e-3  # classifier learning rate
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    eval_batch_size: int = 2048  # batch size for val/test evaluation, no effect on results
    # torch intra-op threads; 0 leaves torch's default. One thread is as fast for these small models
    # and does not slow down many times when other processes share the cores.
    threads: int = 1


@dataclasses.dataclass
class RunConfig:
    """Everything that defines one training run."""

    method: str = "mts"  # uniform | mwnet | l2rw | oracle | mts
    seed: int = 0  # seed of model initialization and batch order
    task: TaskConfig = dataclasses.field(default_factory=TaskConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    pool: PoolConfig = dataclasses.field(default_factory=PoolConfig)
    mts: MTSConfig = dataclasses.field(default_factory=MTSConfig)
    gsnr: GSNRConfig = dataclasses.field(default_factory=GSNRConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
