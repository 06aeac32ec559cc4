"""Params, FLOPs and CPU latency of a model, the same way for every model we publish."""
from __future__ import annotations

import platform
import statistics
import subprocess
import time
from datetime import datetime, timezone

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def example_inputs(model: torch.nn.Module, input_shape) -> tuple:
    """Forward arguments for one batch of `input_shape`: the image, plus 68 landmarks spread over
    the face for models that need them (their values do not change the cost)."""
    from ..models import model_args
    x = torch.zeros(*input_shape)
    diagonal = torch.linspace(0.2, 0.8, 68).view(1, 68, 1).expand(input_shape[0], 68, 2) * input_shape[-1]
    return model_args(model, x, diagonal)


@torch.no_grad()
def count_flops(model: torch.nn.Module, input_shape) -> int:
    """FLOPs of one forward pass (a multiply-add counts as 2), from torch's FlopCounterMode."""
    model.eval()
    args = example_inputs(model, input_shape)
    with FlopCounterMode(display=False) as fc:
        model(*args)
    return int(fc.get_total_flops())


@torch.no_grad()
def latency_ms(fn, repeats: int = 50, warmup: int = 5) -> float:
    """Median wall-clock milliseconds of fn()."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def machine_info() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((l.split(":", 1)[1].strip() for l in fh if l.startswith("model name")), cpu)
    except OSError:
        pass
    import os
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def git_commit() -> str:
    """HEAD, or FERLAB_GIT_COMMIT where it is set: a copy of the tree on another machine (a lent
    GPU) may carry a stale .git, so the commit it was copied at is passed along explicitly."""
    import os
    if os.environ.get("FERLAB_GIT_COMMIT"):
        return os.environ["FERLAB_GIT_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def now_utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@torch.no_grad()
def costs_by_module(model: torch.nn.Module, input_shape, modules: dict[str, torch.nn.Module]) -> dict:
    """Params and forward FLOPs of named parts of a model in one forward pass (paper 003 Table 8
    style): {name: {"params", "flops"}} plus "total"; FLOPs are those spent inside each part."""
    model.eval()
    args = example_inputs(model, input_shape)
    with FlopCounterMode(display=False) as fc:
        model(*args)
    counts = fc.get_flop_counts()
    names = {id(m): n for n, m in model.named_modules()}
    root = type(model).__name__
    out = {}
    for label, mod in modules.items():
        key = f"{root}.{names[id(mod)]}" if names.get(id(mod)) else root
        if key in counts:
            flops = sum(counts[key].values())
        else:  # a part used through one of its methods, not its forward: its direct children's sum
            depth = key.count(".") + 1
            flops = sum(sum(v.values()) for k, v in counts.items() if k.startswith(key + ".") and k.count(".") == depth)
        out[label] = {"params": count_params(mod), "flops": int(flops)}
    out["total"] = {"params": count_params(model), "flops": int(fc.get_total_flops())}
    return out
