"""The `ferlab` command line. Every user error ends in one clear message and a non-zero exit."""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class UserError(Exception):
    """An error the user can fix; printed without a traceback."""


def cmd_train(a):
    from .config import load_config
    from .train import train
    cfg = load_config(a.config, a.overrides)
    if a.out_dir:
        cfg["train"]["out_dir"] = a.out_dir
    r = train(cfg, resume=a.resume)
    print(f"best epoch {r['best_epoch'] + 1}, valid accuracy {r['best_valid_accuracy']:.4f}; "
          f"outputs in {r['out_dir']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ferlab", description="Facial expression recognition toolkit")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a model from a YAML config")
    t.add_argument("config")
    t.add_argument("overrides", nargs="*", help="section.key=value overrides")
    t.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    t.add_argument("--out-dir", default=None)
    t.set_defaults(fn=cmd_train)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .datasets import DatasetError
    from .imageio import BadImageError
    from .labels import UnknownLabelError
    from .models.weights import WeightsError
    try:
        return int(args.fn(args) or 0)
    except (UserError, ConfigError, DatasetError, BadImageError, CheckpointError, WeightsError,
            UnknownLabelError, FileNotFoundError) as e:
        print(f"ferlab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ferlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
