"""``python -m vitjax.data convert ...``: make a dataset vitjax (and TFDS) can read. See docs/data.md.

    python -m vitjax.data convert --image-folder DIR --out DATA_DIR --name NAME [--holdout 0.1]
    python -m vitjax.data convert --pairs 'shards/{00000..00099}.tar' --out DATA_DIR --name NAME
    python -m vitjax.data convert --pairs captions.csv --out DATA_DIR --name NAME
    python -m vitjax.data convert --coco ANNOTATIONS.json --images DIR --out DATA_DIR --name NAME

Then train on it with ``--config.input.data.name=NAME --config.input.data.data_dir=DATA_DIR``.
"""
from __future__ import annotations

import argparse
import logging
import sys

from vitjax.data import convert as cv


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m vitjax.data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="image folder or image-text pairs -> TFDS-format ArrayRecord")
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--image-folder", metavar="DIR",
                     help="DIR/<class>/<image>, or DIR/train/<class>/... with DIR/val/<class>/...")
    src.add_argument("--pairs", nargs="+", metavar="PATH",
                     help="webdataset .tar shards (globs and {000..099} ranges allowed), folders of "
                          "them, or .csv/.tsv/.jsonl tables of (path, caption)")
    src.add_argument("--coco", metavar="ANNOTATIONS.json",
                     help="COCO object-detection annotations (with --images DIR): images with boxes")
    c.add_argument("--images", metavar="DIR", help="with --coco: the folder of the images it names")
    c.add_argument("--out", required=True, metavar="DATA_DIR", help="the data_dir to write into")
    c.add_argument("--name", required=True, help="dataset name: lower-case letters, digits, _")
    c.add_argument("--holdout", type=float, default=None,
                   help="fraction held out as the 'validation' split (default: 0.1 for an image "
                        "folder without val/, 0 for pairs)")
    c.add_argument("--seed", type=int, default=0, help="seed of the hold-out and of the record order")
    c.add_argument("--workers", type=int, default=None, help="encoding processes (default: all cores)")
    c.add_argument("--max-short-side", type=int, default=None, metavar="PX",
                   help="shrink images whose shorter side is longer than PX (default: keep size)")
    c.add_argument("--quality", type=int, default=95, help="JPEG quality of re-encoded images")
    c.add_argument("--max-bad-fraction", type=float, default=0.01,
                   help="stop (writing nothing) when more than this fraction of images is undecodable")
    c.add_argument("--shard-mb", type=int, default=256, help="size of each ArrayRecord shard file")
    c.add_argument("--overwrite", action="store_true", help="replace an existing dataset of that name")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    kw = dict(seed=args.seed, workers=args.workers, max_short_side=args.max_short_side,
              quality=args.quality, max_bad_fraction=args.max_bad_fraction, overwrite=args.overwrite,
              shard_bytes=args.shard_mb << 20, progress=not args.quiet)
    try:
        if args.coco:
            summary = cv.convert_coco(args.coco, args.images, args.out, args.name, holdout=args.holdout or 0.0,
                                      **kw)
        elif args.image_folder:
            summary = cv.convert_image_folder(args.image_folder, args.out, args.name,
                                              holdout=args.holdout, **kw)
        else:
            summary = cv.convert_pairs(args.pairs, args.out, args.name, holdout=args.holdout or 0.0, **kw)
    except (cv.ConvertError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing was written (the temporary folder was removed)", file=sys.stderr)
        return 130
    print(cv.format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
