"""What every stage costs, each beside its baseline measured in the same run.

    python experiments/bench.py                    # every section (about 10 minutes on 2 CPU cores)
    python experiments/bench.py --only kmeans      # one or more of: build voc kmeans extraction memory thresholds

Sections (docs/benchmarks.md's tables are this script's output on the machines they name):

- build: the default job's prototype build against its classifier's training, with the build's
  options (bf16 feature pass, prototypes from the seed-evaluation split, per-class image sampling)
  each on the same classifier, with its LPCAM mIoU; the feature pass against a plain forward pass.
- voc: the VOC recipe's build/train ratio, estimated from timed steps of ResNet-50 at VOC's sizes
  (the printout says how).
- kmeans: lpcam's k-means (its default k-means++ seeding, scikit-learn's greedy one, and greedy
  seeding on a sample of 256 rows per centre) against scikit-learn's (one restart, the same
  iteration cap) and faiss's (when importable; given every point), inertia side by side.
- extraction: LPCAM against CAM on the same images and views, and both against the forward pass.
- memory: peak memory of the build when the dataset grows 10×, and of a COCO-size pool.
- thresholds: the evaluation's one pass over every threshold against a loop per threshold.

Timings are wall-clock seconds, the best of ``--repeat`` runs where a step is cheap enough to
repeat; peak memory is each child process's maximum resident set.
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("build", "voc", "kmeans", "extraction", "memory", "thresholds")


# --------------------------------------------------------------------------- helpers


def best_of_each(
    fns: dict[str, Callable[[], object]], repeat: int, clock: Callable[[], float] = time.perf_counter
) -> dict[str, float]:
    """The fastest of ``repeat`` timed calls of each function, called in turn (a, b, c, a, b, c, ...)
    rather than one after the other, so that a slow spell of the machine (other tenants, clock
    changes) falls on every method alike instead of on whichever ran during it. It cannot steady a
    baseline whose own time moves for a whole run: on the 2-core AMD machine with AVX512-BF16,
    scikit-learn's best of three fits of the same rows took 0.66 s in one interleaved run and
    1.05 s in the next, while lpcam's moved by 17 % (docs/benchmarks.md, the AVX512-BF16 k-means table)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t = clock()
            fn()
            times[name].append(clock() - t)
    return {name: min(ts) for name, ts in times.items()}


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """The fastest of ``repeat`` timed calls of one function (the least disturbed by the rest of the
    machine)."""
    return best_of_each({"": fn}, repeat)[""]


def table(title: str, header: list[str], rows: list[list[object]]) -> None:
    """A Markdown table, so the benchmarks page can take it as printed."""
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row) + " |")
    sys.stdout.flush()


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from lpcam.run import CONFIG_DIR

    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def peak_rss_mb() -> float:
    """This process's peak resident memory: Linux's VmHWM (ru_maxrss would include the memory of
    the parent the process was forked from, which Linux carries across exec)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(section: str, **kwargs) -> dict:
    """Run ``--child section`` in a fresh process (its peak memory is its own) and read its JSON."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", section, json.dumps(kwargs)], capture_output=True, text=True, cwd=ROOT
    )
    if out.returncode:
        raise RuntimeError(f"child {section} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- build


def run_job(overrides: list[str]) -> dict:
    from lpcam.pipeline import run

    return run(compose(overrides))


def section_build(args) -> None:
    """The default job, then its prototype build under each option on the same classifier."""
    from hydra.utils import instantiate

    from lpcam.cams.multiscale import multiscale_features
    from lpcam.hardware import native_cpu_bf16
    from lpcam.models.classifier import Classifier

    # without native bf16 kernels autocast runs reference code (7x slower than float32, docs/benchmarks.md):
    # the bf16 rows would say nothing about the option but cost minutes, so they are left out
    bf16 = native_cpu_bf16()
    if not bf16:
        print("(no native bf16 on this CPU: the bf16 rows are left out)")
    work = Path(tempfile.mkdtemp(prefix="lpcam-bench-"))
    common = [f"data_dir={args.data_dir}", "logger=none", "cache.classifier=false", "cache.features=false",
              "trainer.enable_progress_bar=false"]  # fmt: skip
    base = run_job([*common, f"run_dir={work / 'default'}"])
    ckpt = work / "default" / "checkpoints" / "best.ckpt"
    train = base["timings_s"]["train"]
    train_aug = ["dataset.prototype_split=null"]  # prototypes from the training split (2,000 images)
    # the rows the feature-pass table below compares with forward passes over the same images
    train_aug_row, bf16_row = "dataset.prototype_split=null (train_aug: the training split)", "train_aug, lpcam.feature_dtype=bfloat16"
    variants = {
        "default (train: the seed-evaluation split, float32)": [],
        train_aug_row: train_aug,
        # the precision options on the larger pass, where their cost shows
        **({bf16_row: [*train_aug, "lpcam.feature_dtype=bfloat16"]} if bf16 else {}),
        "train_aug, lpcam.pool_dtype=float16": [*train_aug, "lpcam.pool_dtype=float16"],
        "train_aug, dataset.images_per_class=100 (COCO's recipe)": [*train_aug, "dataset.images_per_class=100"],
    }
    rows, features_s = [], {}
    for i, (name, extra) in enumerate(variants.items()):
        res = base if not extra else run_job([*common, f"ckpt_path={ckpt}", f"run_dir={work / str(i)}", *extra])
        t = res["timings_s"]
        build = t["features"] + t["clustering"]
        lp = res["methods"][res["primary_method"]]["best"]["miou"]
        features_s[name] = t["features"]
        rows.append([name, t["features"], t["clustering"], build / train, lp, res["methods"]["lpcam_max"]["best"]["miou"]])
    table(
        f"Prototype build / classifier training (default job, seed 0; training {train:.1f} s; CAM {base['methods']['cam']['best']['miou']})",
        ["build", "features s", "k-means s", "build / train", "LPCAM mIoU", "LPCAM max mIoU"],
        rows,
    )

    # the feature pass over the training split's 2,000 images (the seed-evaluation split's 300 time
    # less steadily), against forward passes over the same images
    cfg = compose(common + [f"run_dir={work / 'fwd'}", *train_aug])
    dm = instantiate(cfg.dataset)
    dm.prepare_data()
    model = Classifier.load_from_checkpoint(ckpt, map_location="cpu", backbone=instantiate(cfg.backbone)).eval()
    images = [b["image"] for b in dm.prototype_dataloader()]
    with torch.no_grad():
        plain = best_of(lambda: [model.features(x) for x in images], args.repeat)
        flipped = best_of(lambda: [multiscale_features(model.features, x, (1.0,), True) for x in images], args.repeat)
        # the same pass with the images read as the feature pass reads them (the same loader)
        loaded = best_of(
            lambda: [multiscale_features(model.features, b["image"], (1.0,), True) for b in dm.prototype_dataloader()],
            args.repeat,
        )
        if bf16:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                flipped_bf16 = best_of(
                    lambda: [multiscale_features(model.features, x, (1.0,), True) for x in images], args.repeat
                )
    n = sum(len(x) for x in images)
    feature_pass = features_s[train_aug_row]
    passes = [
        ["forward, image only", plain, n / plain, feature_pass / plain],
        ["forward, image and flip (what the split's CAM needs)", flipped, n / flipped, feature_pass / flipped],
        ["reading the images + forward, image and flip", loaded, n / loaded, feature_pass / loaded],
    ]
    if bf16:
        bf16_pass = features_s[bf16_row]
        passes.append(["forward, image and flip, bf16 autocast", flipped_bf16, n / flipped_bf16, bf16_pass / flipped_bf16])
    passes.append(["feature pass (reading, forward + CAM + split + sampling)", feature_pass, n / feature_pass, 1.0])
    table(f"Feature pass against a forward pass ({n} training images)", ["pass", "seconds", "images/s", "feature pass / this"], passes)


# --------------------------------------------------------------------------- voc estimate


def section_voc(args) -> None:
    """ResNet-50 (output stride 16, as the recipe) timed on a few steps at VOC's sizes, scaled to
    the recipe's image counts: training 5 epochs of 10,582 crops of 512² (forward + backward);
    the feature pass 10,582 (train_aug) or 1,464 (train) images of 500×375 with their flips;
    k-means 40 times (20 classes × 2 sides) on the pool's rows."""
    from lpcam.models.backbones import torchvision_resnet
    from lpcam.models.classifier import Classifier
    from lpcam.prototypes.kmeans import kmeans

    torch.manual_seed(0)
    model = Classifier(torchvision_resnet("resnet50", output_stride=16), num_classes=20)
    batch = 2
    crops = torch.rand(batch, 3, 512, 512)
    labels = (torch.rand(batch, 20) < 0.1).float()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def train_step():
        opt.zero_grad()
        logits = model(crops)
        F.multilabel_soft_margin_loss(logits, labels).backward()
        opt.step()

    model.train()
    train_step()  # warm-up
    t_train = best_of(train_step, args.repeat) / batch
    model.eval()
    image = torch.rand(1, 3, 375, 500)
    with torch.no_grad():
        model.features(torch.cat([image, image.flip(-1)]))
        t_feat = best_of(lambda: model.features(torch.cat([image, image.flip(-1)])), args.repeat)
    cap = 20000
    rows = torch.randn(cap, 2048).relu()
    t0 = time.perf_counter()
    result = kmeans(rows, 12, seed=0)
    t_kmeans = time.perf_counter() - t0
    train_s = 5 * 10582 * t_train
    out = []
    for split, n in (("train_aug", 10582), ("train (the official code; lpcam's default)", 1464)):
        build = n * t_feat + 40 * t_kmeans
        out.append([split, n * t_feat, 40 * t_kmeans, train_s, build / train_s])
    table(
        f"VOC recipe, estimated (ResNet-50 OS16, CPU; per image: train step {t_train:.2f} s, feature pass {t_feat:.2f} s; "
        f"one k-means on {cap}×2048 {t_kmeans:.1f} s, {result.iterations} iterations)",
        ["prototype split", "features s", "k-means s (40 runs)", "training s (5 × 10,582)", "build / train"],
        out,
    )


# --------------------------------------------------------------------------- k-means


def mixture(n: int, dim: int = 512, centres: int = 24, seed: int = 0) -> torch.Tensor:
    """Non-negative, clustered rows like a CNN's local features: ReLU of a Gaussian mixture."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(centres, dim, generator=g)
    return (means[torch.randint(centres, (n,), generator=g)] + 1.5 * torch.randn(n, dim, generator=g)).relu()


def cosine_inertia(x: torch.Tensor, labels, centres) -> float:
    c = F.normalize(torch.as_tensor(np.asarray(centres)), dim=1)
    cos = (F.normalize(x, dim=1) * c[torch.as_tensor(np.asarray(labels)).long()]).sum(1)
    return float((1 - cos).double().sum())


def euclidean_inertia(x: torch.Tensor, labels, centres) -> float:
    c = torch.as_tensor(np.asarray(centres))
    return float(((x - c[torch.as_tensor(np.asarray(labels)).long()]) ** 2).double().sum())


def section_kmeans(args) -> None:
    """Each method on the same rows, one restart, 100 iterations at most, the best of ``--repeat``
    fits (each from the same seed, so the same result), the methods' fits taken in turn
    (:func:`best_of_each`); inertia by one formula.

    Cosine: lpcam clusters the raw rows by cosine; scikit-learn and faiss (spherical) get the
    L2-normalised rows, the usual way to run them for cosine. Faiss runs a fixed number of
    iterations (no tolerance): it gets lpcam's iteration count, and ``max_points_per_centroid``
    large enough to use every row (by default it samples 256 per centre)."""
    from sklearn.cluster import KMeans

    from lpcam.prototypes.kmeans import kmeans

    try:
        import faiss
    except ImportError:
        faiss = None
    # lpcam's default seeding, scikit-learn's (greedy), and greedy on 256 rows per centre
    seedings = (("kmeans++", None), ("greedy", None), ("greedy", 256 * 12))
    rows = []
    for n in args.kmeans_sizes:
        x = mixture(n)
        for metric in ("cosine", "euclidean"):
            data = F.normalize(x, dim=1) if metric == "cosine" else x
            inertia = cosine_inertia if metric == "cosine" else euclidean_inertia
            sk = KMeans(12, n_init=1, max_iter=100, random_state=0, algorithm="lloyd")
            fits: dict[str, Callable[[], object]] = {"sklearn": lambda: sk.fit(data.numpy())}
            results, kms = {}, {}
            for init, sample in seedings:
                fit = functools.partial(kmeans, x, 12, metric=metric, seed=0, max_iter=100, init=init, init_sample=sample)
                fits[f"lpcam {init} {sample}"] = fit
                results[init, sample] = fit()  # every fit from the same seed gives this result
                if faiss is not None:
                    # Faiss has no tolerance: it gets lpcam's iteration count, and every row.
                    km = faiss.Kmeans(512, 12, niter=results[init, sample].iterations, nredo=1, seed=1,
                                      spherical=metric == "cosine", max_points_per_centroid=n, verbose=False)  # fmt: skip
                    kms[init, sample] = km
                    fits[f"faiss {init} {sample}"] = functools.partial(km.train, data.numpy())  # trains afresh
            times = best_of_each(fits, args.repeat)
            i_sk = inertia(x, sk.labels_, sk.cluster_centers_)
            for init, sample in seedings:
                ours, t_ours = results[init, sample], times[f"lpcam {init} {sample}"]
                i_ours = inertia(x, ours.labels, ours.centres)
                name = f"{n:,} × 512, {metric}, lpcam init={init}" + (f", init_sample={sample}" if sample else "")
                row = [name, t_ours, ours.iterations, times["sklearn"], sk.n_iter_, times["sklearn"] / t_ours,
                       i_sk / i_ours - 1]  # fmt: skip
                if faiss is not None:
                    km, t_faiss = kms[init, sample], times[f"faiss {init} {sample}"]
                    _, labels = km.index.search(data.numpy(), 1)
                    row += [t_faiss, t_ours / t_faiss, inertia(x, labels[:, 0], km.centroids) / i_ours - 1]
                else:
                    row += ["not installed", "", ""]
                rows.append(row)
    table(
        "k-means, K = 12 (inertia: relative to lpcam's, by one formula)",
        ["rows", "lpcam s", "iters", "sklearn s", "iters", "sklearn / lpcam", "sklearn inertia Δ",
         "faiss s", "lpcam / faiss", "faiss inertia Δ"],
        rows,
    )  # fmt: skip


# --------------------------------------------------------------------------- extraction


def section_extraction(args) -> None:
    """CAM and LPCAM maps of the evaluation split at the evaluation's views (4 scales and flips),
    each with its own forward pass, against the forward pass alone."""
    from hydra.utils import instantiate

    from lpcam.cams.base import Batch
    from lpcam.cams.cam import Cam
    from lpcam.cams.multiscale import multiscale_features
    from lpcam.cams.prototype_maps import Lpcam
    from lpcam.pipeline import prototype_settings
    from lpcam.stages.evaluation import EvaluationSettings
    from lpcam.stages.prototypes import build_prototypes

    work = Path(tempfile.mkdtemp(prefix="lpcam-bench-"))
    cfg = compose([f"data_dir={args.data_dir}", "logger=none", f"run_dir={work}", "trainer.max_epochs=1",
                   "trainer.enable_progress_bar=false", "cache.classifier=false", "cache.features=false"])  # fmt: skip
    from lpcam.stages.classifier import train

    dm = instantiate(cfg.dataset)
    dm.prepare_data()
    trained = train(cfg, dm, instantiate(cfg.backbone), work, None)
    model = trained.classifier.eval()
    protos, _ = build_prototypes(model, dm.prototype_dataloader(), dm.class_names, prototype_settings(cfg), progress=False)
    s = EvaluationSettings()
    loader = dm.test_dataloader()
    batches = [(b["image"], b["label"]) for b in loader]
    cam, lpcam = Cam(model), Lpcam(protos)

    def maps(method):
        return lambda: [method.maps(Batch(x, y, model.features, s.scales, s.flip)) for x, y in batches]

    with torch.no_grad():
        t_fwd = best_of(lambda: [multiscale_features(model.features, x, s.scales, s.flip) for x, _ in batches], args.repeat)
        t_cam = best_of(maps(cam), args.repeat)
        t_lpcam = best_of(maps(lpcam), args.repeat)
    n = sum(len(x) for x, _ in batches)
    table(
        f"Extraction ({n} evaluation images, scales {list(s.scales)} with flips)",
        ["maps", "seconds", "images/s", "/ CAM", "/ forward"],
        [
            ["forward pass only", t_fwd, n / t_fwd, t_fwd / t_cam, 1.0],
            ["CAM", t_cam, n / t_cam, 1.0, t_cam / t_fwd],
            ["LPCAM", t_lpcam, n / t_lpcam, t_lpcam / t_cam, t_lpcam / t_fwd],
        ],
    )


# --------------------------------------------------------------------------- memory


def child_build(repeats: int, data_dir: str) -> dict:
    """The prototype features of the seed-evaluation split repeated ``repeats`` times."""
    from hydra.utils import instantiate
    from torch.utils.data import ConcatDataset, DataLoader

    from lpcam.models.classifier import Classifier
    from lpcam.pipeline import prototype_settings
    from lpcam.prototypes.clustering import cluster_and_select
    from lpcam.stages.prototypes import collect_features

    cfg = compose([f"data_dir={data_dir}", "run_dir=/tmp/lpcam-bench-child"])
    dm = instantiate(cfg.dataset)
    dm.prepare_data()
    torch.manual_seed(0)
    model = Classifier(instantiate(cfg.backbone), num_classes=dm.num_classes).eval()
    data = ConcatDataset([dm.dataset(dm.eval_split)] * repeats)
    before = peak_rss_mb()
    settings = prototype_settings(cfg)
    pool = collect_features(model, DataLoader(data, batch_size=50), dm.num_classes, settings, progress=False)
    cluster_and_select(pool, model.weights, dm.class_names, settings, progress=False)
    return {"images": len(data), "peak_mb": peak_rss_mb(), "before_mb": before, "pool_mb": pool.nbytes / 2**20}


def child_coco_pool(budget_mb: float, dtype: str) -> dict:
    """A COCO-size pool (80 classes, 2048-d) filled with random features until every reservoir is full."""
    from lpcam.prototypes.pool import POOL_DTYPES, FeaturePool, pool_cap

    classes, dim = 80, 2048
    cap = pool_cap(budget_mb, classes, dim, POOL_DTYPES[dtype], None)
    before = peak_rss_mb()
    pool = FeaturePool(classes, dim, cap, dtype=POOL_DTYPES[dtype])
    g = torch.Generator().manual_seed(0)
    grid = 32 * 32
    per_batch = 8
    while int(pool.seen.min()) < cap:  # each batch: 8 images, every class labelled in one of them
        feats = torch.rand(per_batch, dim, 32, 32, generator=g)
        pairs = torch.stack([torch.arange(classes) % per_batch, torch.arange(classes)], 1)
        pairs = pairs[torch.argsort(pairs[:, 0], stable=True)]
        is_fg = torch.rand(classes, 32, 32, generator=g) < 0.5
        pool.add_batch(feats, pairs, is_fg)
    return {"cap": cap, "pool_mb": pool.nbytes / 2**20, "peak_mb": peak_rss_mb(), "before_mb": before,
            "features_seen": int(pool.seen.sum()), "grid": grid}  # fmt: skip


def section_memory(args) -> None:
    one, ten = child("build", repeats=1, data_dir=args.data_dir), child("build", repeats=10, data_dir=args.data_dir)
    rows = [[f"{r['images']} images", r["pool_mb"], r["peak_mb"], r["peak_mb"] / one["peak_mb"]] for r in (one, ten)]
    table("Peak memory of the prototype build (features + k-means), 1× and 10× the images",
          ["build over", "pool MB", "peak RSS MB", "/ 1×"], rows)  # fmt: skip
    rows = []
    for dtype in ("float16", "float32"):
        r = child("coco_pool", budget_mb=args.budget_mb, dtype=dtype)
        rows.append([dtype, r["cap"], r["pool_mb"], r["peak_mb"] - r["before_mb"], args.budget_mb, r["features_seen"]])
    table(
        "A COCO-size pool: 80 classes × 2 sides, 2048-d random features until every reservoir is full",
        ["pool dtype", "features / class / side", "pool MB", "peak RSS growth MB", "budget MB", "features seen"],
        rows,
    )


# --------------------------------------------------------------------------- thresholds


def section_thresholds(args) -> None:
    """Confusions of random maps for the 20 default thresholds: one pass against one per threshold."""
    from lpcam.metrics.segmentation import DEFAULT_THRESHOLDS, SeedConfusion

    g = torch.Generator().manual_seed(0)
    images = [(torch.rand(2, 96, 96, generator=g), torch.tensor([1, 4]), torch.randint(0, 7, (96, 96), generator=g))
              for _ in range(300)]  # fmt: skip

    def one_pass():
        conf = SeedConfusion(7, DEFAULT_THRESHOLDS)
        for cams, keys, gt in images:
            conf.update(cams, keys, gt)
        return conf

    def loop():
        confs = [SeedConfusion(7, (t,)) for t in DEFAULT_THRESHOLDS]
        for cams, keys, gt in images:
            for conf in confs:
                conf.update(cams, keys, gt)
        return confs

    together, apart = one_pass(), loop()
    same = all(torch.equal(together.confusion[i], c.confusion[0]) for i, c in enumerate(apart))
    t_one, t_loop = best_of(one_pass, args.repeat), best_of(loop, args.repeat)
    table(
        f"Seed evaluation over {len(DEFAULT_THRESHOLDS)} thresholds (300 images of 96², 2 classes each)",
        ["evaluation", "seconds", "loop / this", "confusions identical"],
        [["one pass", t_one, t_loop / t_one, same], ["a pass per threshold", t_loop, 1.0, same]],
    )
    if not same:
        raise SystemExit("the one-pass evaluation differs from the loop")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions of the cheap steps (the best counts)")
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    parser.add_argument("--kmeans-sizes", type=int, nargs="+", default=[50_000, 200_000])
    parser.add_argument("--budget-mb", type=float, default=4096)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, kwargs = args.child
        print(json.dumps({"build": child_build, "coco_pool": child_coco_pool}[name](**json.loads(kwargs))))
        return
    import os
    import platform

    print(f"# lpcam bench: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    for name in args.only:
        globals()[f"section_{name}"](args)


if __name__ == "__main__":
    main()
