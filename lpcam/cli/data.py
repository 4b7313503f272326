"""``lpcam-data``: datasets prepared for lpcam's readers, downloaded the standard way.

    lpcam-data voc DIR          # VOC2012 + SBD under DIR/VOC2012, then: lpcam experiment=voc_resnet50 data_dir=DIR
    lpcam-data coco DIR --yes   # COCO 2014 under DIR/COCO2014 (about 20 GB: says so and stops without --yes)

Downloads are checked and resumable (a second call with a complete tree does nothing and says so);
``LPCAM_MIRROR=URL`` fetches the archives from a mirror, ``LPCAM_OFFLINE=1`` refuses to download.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from lpcam.errors import InputError

EXPERIMENTS = {"voc": "experiment=voc_resnet50", "coco": "experiment=coco_resnet50"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lpcam-data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="dataset", required=True)
    voc = sub.add_parser("voc", help="PASCAL VOC 2012 trainval + SBD's masks, with IRN's train_aug (about 6 GB of disk)")
    coco = sub.add_parser("coco", help="MS COCO 2014 images and instance annotations (about 20 GB to download)")
    for p in (voc, coco):
        p.add_argument("directory", help="where to put it: DIR/VOC2012 or DIR/COCO2014 (and the archives in DIR/downloads)")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
    coco.add_argument("--yes", action="store_true", help="start the 20 GB download")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="lpcam-data: %(message)s")
    try:
        if args.dataset == "voc":
            from lpcam.data.prepare_voc import prepare_voc

            prepared = prepare_voc(Path(args.directory) / "VOC2012", progress=not args.no_progress)
        else:
            from lpcam.data.prepare_coco import prepare_coco

            prepared = prepare_coco(Path(args.directory) / "COCO2014", yes=args.yes, progress=not args.no_progress)
    except InputError as err:
        print(f"lpcam-data: error: {err}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{n:,} {split}" for split, n in prepared.counts.items())
    if prepared.done_before:
        print(f"{prepared.root}: already complete ({counts}); nothing to do")
    else:
        print(f"{prepared.root}: ready ({counts})")
    print(f"train on it: lpcam {EXPERIMENTS[args.dataset]} data_dir={prepared.root.parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
