"""How prototypes are built: one typed, frozen, self-checking settings object.

Hydra builds it from the ``lpcam`` config group, whose schema is this class's fields
(:mod:`lpcam.config_schemas`): their types are checked when the config is composed, their ranges here.
Everything downstream reads it from here: the build takes it whole, the prototypes file records
:meth:`PrototypeSettings.as_dict` in its ``meta``, and the feature cache hashes
:meth:`PrototypeSettings.sampling_dict`. Adding a setting is therefore one field here (with its
check in :meth:`PrototypeSettings._checks`) and the code that reads it; a field that changes which features are sampled is declared with ``metadata=SAMPLING``
so that it also reaches the feature-cache key.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from lpcam.errors import InputError

SAMPLING = {"sampling": True}  # field metadata: the setting changes the sampled feature pool
SCORES = ("softmax", "sigmoid")
POOL_DTYPES = ("float32", "float16", "bfloat16")
FEATURE_DTYPES = ("float32", "bfloat16")
KMEANS_METRICS = ("cosine", "euclidean")
KMEANS_INITS = ("kmeans++", "greedy", "random")
KMEANS_STOPS = ("relative", "total")
KMEANS_RNGS = ("torch", "numpy")
SPLIT_RESOLUTIONS = ("feature_grid", "image")
SPLIT_RESCALES = ("bilinear", "pil_bicubic")  # as lpcam.cams.multiscale.RESCALES (this layer imports no cams)
SPLIT_UPSAMPLES = ("direct", "padded")  # as lpcam.cams.multiscale.UPSAMPLES
TAU_TIES = ("background", "drop")


@dataclass(frozen=True)
class PrototypeSettings:
    """The LPCAM prototype build (the paper's notation: K, τ, μ_f, μ_b).

    ``seed`` seeds the feature sampling and the k-means; the config passes the run's seed.
    """

    k: int = 12  # k-means centres per class, for foreground and background each
    tau: float = field(default=0.1, metadata=SAMPLING)  # CAM threshold: foreground / background features
    # the CAM that splits them: its views (scales, each with its mirror image) and where it is thresholded
    split_scales: tuple[float, ...] = field(default=(1.0,), metadata=SAMPLING)  # the split CAM's scales
    split_flip: bool = field(default=True, metadata=SAMPLING)  # each split scale with its mirror image
    split_resolution: str = field(default="feature_grid", metadata=SAMPLING)  # feature_grid | image (then nearest)
    split_rescale: str = field(default="pil_bicubic", metadata=SAMPLING)  # its images at other scales (evaluation.rescale)
    split_upsample: str = field(default="padded", metadata=SAMPLING)  # its maps to the image's size (evaluation.upsample)
    tau_ties: str = field(default="drop", metadata=SAMPLING)  # a position whose CAM is exactly τ: drop (official) | background
    mu_fg: float = 0.9  # foreground centre with score_c > mu_fg: class prototype
    mu_bg: float = 0.9  # background centre with context_min < score_c < mu_bg: context prototype
    context_min: float = 0.05  # the context prototypes' lower score bound (the official VOC code's 0.05)
    score: str = "softmax"  # centre score: softmax over classes (official) | sigmoid
    keep_best: bool = True  # keep the best foreground centre when none passes mu_fg
    max_features_per_class: int | None = field(default=None, metadata=SAMPLING)  # reservoir cap per class and side (None: the budget)
    pool_memory_mb: float | None = field(default=4096, metadata=SAMPLING)  # all reservoirs together, whatever C and D
    pool_dtype: str = field(default="float32", metadata=SAMPLING)  # how sampled features are stored
    feature_dtype: str = field(default="float32", metadata=SAMPLING)  # the feature pass: float32 | bfloat16 (autocast)
    kmeans_metric: str = "cosine"  # cosine (assignment by cosine similarity, centres the means of the raw features: the official code's) | euclidean
    kmeans_init: str = "random"  # random (official: distinct rows drawn uniformly) | kmeans++ | greedy (scikit-learn's)
    kmeans_init_sample: int | None = None  # seed kmeans++/greedy on this many rows drawn uniformly (None: all)
    kmeans_rng: str = "torch"  # random init's rows: torch (a generator per fit) | numpy (the official code's draws)
    kmeans_stop: str = "total"  # total: (sum of shifts)^2 < tol (official) | relative: max centre shift / its norm < tol
    kmeans_tol: float = 5.0  # the stopping rule's threshold (official: 5; relative: 1e-4)
    kmeans_max_iter: int | None = 300  # a bound on time (None: no cap, official)
    seed: int = field(default=0, metadata=SAMPLING)

    def __post_init__(self) -> None:
        object.__setattr__(self, "split_scales", tuple(self.split_scales))  # Hydra hands lists over
        for name, ok, expected in self._checks():
            if not ok:
                raise InputError(f"lpcam.{name}={getattr(self, name)!r}: expected {expected}")

    def _checks(self) -> list[tuple[str, bool, str]]:
        whole = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
        return [
            ("k", whole(self.k) and self.k >= 1, "a whole number of centres ≥ 1"),
            ("tau", 0 < self.tau < 1, "a CAM threshold in (0, 1)"),
            ("mu_fg", 0 <= self.mu_fg < 1, "a score threshold in [0, 1)"),
            ("mu_bg", 0 < self.mu_bg <= 1, "a score threshold in (0, 1]"),
            ("context_min", 0 <= self.context_min < self.mu_bg, "a score in [0, lpcam.mu_bg)"),
            ("score", self.score in SCORES, " or ".join(SCORES)),
            ("max_features_per_class", self.max_features_per_class is None
             or (whole(self.max_features_per_class) and self.max_features_per_class >= self.k),
             "a whole number, at least lpcam.k, or null (the memory budget alone)"),
            ("pool_memory_mb", self.pool_memory_mb is None and self.max_features_per_class is not None
             or isinstance(self.pool_memory_mb, (int, float)) and not isinstance(self.pool_memory_mb, bool)
             and self.pool_memory_mb > 0, "megabytes > 0 (null only with lpcam.max_features_per_class set)"),
            ("pool_dtype", self.pool_dtype in POOL_DTYPES, " or ".join(POOL_DTYPES)),
            ("feature_dtype", self.feature_dtype in FEATURE_DTYPES, " or ".join(FEATURE_DTYPES)),
            ("split_scales", len(self.split_scales) > 0 and all(s > 0 for s in self.split_scales),
             "a non-empty list of positive scales"),
            ("split_resolution", self.split_resolution in SPLIT_RESOLUTIONS, " or ".join(SPLIT_RESOLUTIONS)),
            ("split_rescale", self.split_rescale in SPLIT_RESCALES, " or ".join(SPLIT_RESCALES)),
            ("split_upsample", self.split_upsample in SPLIT_UPSAMPLES, " or ".join(SPLIT_UPSAMPLES)),
            ("tau_ties", self.tau_ties in TAU_TIES, " or ".join(TAU_TIES)),
            ("kmeans_metric", self.kmeans_metric in KMEANS_METRICS, " or ".join(KMEANS_METRICS)),
            ("kmeans_init", self.kmeans_init in KMEANS_INITS, " or ".join(KMEANS_INITS)),
            ("kmeans_init_sample", self.kmeans_init_sample is None
             or whole(self.kmeans_init_sample) and self.kmeans_init_sample >= self.k,
             "a whole number of rows, at least lpcam.k, or null (seed on every row)"),
            ("kmeans_stop", self.kmeans_stop in KMEANS_STOPS, " or ".join(KMEANS_STOPS)),
            ("kmeans_rng", self.kmeans_rng in KMEANS_RNGS and (self.kmeans_rng == "torch" or self.kmeans_init == "random"),
             " or ".join(KMEANS_RNGS) + " (numpy only with lpcam.kmeans_init=random)"),
            ("kmeans_tol", self.kmeans_tol >= 0, "a tolerance ≥ 0"),
            ("kmeans_max_iter", self.kmeans_max_iter is None or whole(self.kmeans_max_iter) and self.kmeans_max_iter >= 1,
             "a whole number ≥ 1, or null (no cap: the official code's, which never stops if the centres keep moving)"),
        ]  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        """Every setting, as recorded in a prototypes file's ``meta``: JSON's types (lists, not
        tuples), so the meta equals itself after a round trip through an export's manifest."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def sampling_dict(self) -> dict[str, Any]:
        """The settings that decide which features the k-means sees (the feature-cache key)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("sampling")}

    def built(self, meta: dict) -> bool:
        """Whether prototypes with this ``meta`` were built with exactly these settings."""
        return all(meta.get(k) == v for k, v in self.as_dict().items())

