"""How much memory a run needs, how much the machine has, and how many workers it can hold.

A spec with ``model.filters: 4096`` validates (the key exists, the value is a positive int), but
building it asks TensorFlow for tens of gigabytes and fails with a multi-line TypeError or the
kernel's OOM killer, after the MLflow run has started. :func:`check` refuses such a spec first,
with one line: the estimate, the limit, and what to change. It is pure arithmetic on the spec (no
TensorFlow), so campaigns check every arm before queueing any.

The estimate (:func:`estimate`) is a documented, conservative approximation of training a U-Net or
a coarse-fine model of ``ablate.models`` with Adam on float32 weights:

- **weights and optimizer state**: parameters x 4 bytes x 4 (the weights, Adam's two moments and
  the gradient). A branch's parameters are counted per level ``l`` of width
  ``w_l = filters x width_mult x 2**l`` (``ablate.models.unet.stage_filters``): an encoder stage, an
  up-sampling and a decoder stage hold about ``(8 + 46 k**2 / 9) w_l**2`` weights for ``k x k``
  convolutions (two ``k x k`` convolutions in, a 2x2 transposed convolution up, two ``k x k``
  convolutions on the concatenated skip out: 8 + 13.5 + 27 for k = 3, rounded up for residual and
  bilinear variants), and the bottleneck at most ``34 w_depth**2`` (the SE + dilated one; a plain
  one is 13.5). ``tests/test_hardening_domain.py`` builds real models and checks the count lies
  between 1 and 2.5 times the true one.
- **activations**: batch x sum over levels of ``(H / 2**l) x (W / 2**l) x w_l`` x 4 bytes x
  ``ACTIVATIONS_PER_LEVEL``, the tensors per level that back-propagation keeps (each convolution's
  output, its batch norm and ReLU, the pooled, up-sampled and concatenated maps, and their
  gradients), and the same for the global branch of a coarse-fine model on its pooled input.
- **the runtime**: ``RUNTIME_BYTES`` for TensorFlow itself, the data set and the tracking client.

Mixed precision would halve the activations; the estimate ignores that, erring on the large side.

Example:
    >>> spec = load_spec("ablations/presets/unet-baseline.yaml")
    >>> estimate(spec) < 4 * GB
    True
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ablate.errors import AblateError, DataError, SpecError
from ablate.registry import BRANCH, BRANCHES, DEFAULT_BRANCH, FUSIONS, MODELS, STAGE, Registry
from ablate.spec import Spec, checking_task
from ablate.task import MARS, Task

GB = 10**9  # ABLATE_MEMORY_LIMIT_GB and every message count decimal gigabytes
LIMIT_ENV = "ABLATE_MEMORY_LIMIT_GB"
INPUT_HW = (MARS.height, MARS.width)  # the Mars task's tiles; a run's own size is its task's (input_hw)
BYTES_PER_VALUE = 4  # float32
WEIGHT_COPIES = 4  # the weights, Adam's two moments, the gradient
ACTIVATIONS_PER_LEVEL = 24  # tensors back-propagation keeps per level, rounded up (see the module doc)
BOTTLENECK_WEIGHTS = 34  # x w_depth**2: the largest shipped bottleneck (SE + dilated), rounded up
FUSION_WEIGHTS = 40  # x w_0**2: the largest shipped fusion (cross-scale), rounded up
KERNEL = 3  # a stage block without a kernel_size (none ships one) counted as 3x3
RUNTIME_BYTES = 1 * GB  # TensorFlow, the data set and MLflow in one process, before any model
WORKER_BYTES = RUNTIME_BYTES  # what one more worker process costs before it builds its model


def input_hw(spec: Spec, task: Task | None = None) -> tuple[int, int]:
    """The input (height, width) of a run: ``task``'s, else ``ablate.spec.checking_task``'s (the spec's
    given task, else its data file's image size from the file's headers)."""
    task = task or checking_task(spec)
    return task.height, task.width


def estimate(spec: Spec, task: Task | None = None) -> int:
    """Bytes a run of ``spec`` needs to train: weights, optimizer state, activations, the runtime.

    A conservative approximation (see the module docstring); pure arithmetic on the spec, at
    the task's input size (:func:`input_hw`). Channels change only the first convolution: left out.
    """
    params, values = _sizes(spec.model, input_hw(spec, task))
    weights = params * BYTES_PER_VALUE * WEIGHT_COPIES
    activations = values * spec.train.batch_size * BYTES_PER_VALUE * ACTIVATIONS_PER_LEVEL
    return int(min(weights + activations + RUNTIME_BYTES, float(2**62)))  # absurd specs: huge, not inf


def parameters(spec: Spec) -> int:
    """The estimate's parameter count alone (what the tests compare with a built model)."""
    return int(_sizes(spec.model)[0])


def limit() -> int:
    """Bytes a run may use: ``ABLATE_MEMORY_LIMIT_GB`` if set, else what the machine has free."""
    return _limit()[0]


def check(spec: Spec, task: Task | None = None) -> None:
    """Raises a SpecError, one line, if ``spec`` needs more memory than :func:`limit` allows.

    ``task`` None: ``checking_task(spec)``; where that cannot read the data file, nothing is checked
    here: the data check that comes next names the file's problem, with its campaign (an ablation
    file checks its arms' memory when it loads, before its data check).
    """
    if task is None:
        try:
            task = checking_task(spec)
        except DataError:
            return
    need = estimate(spec, task)
    have, source = _limit()
    if need <= have:
        return
    m = spec.model
    raise SpecError(
        f"The model needs about {_gb(need)} to train (filters={_setting(m, 'filters')}, depth={_setting(m, 'depth')}, "
        f"batch_size={spec.train.batch_size}), over the {_gb(have)} {source}; set {LIMIT_ENV} or reduce "
        f"model.filters/depth/train.batch_size."
    )


def max_workers() -> int:
    """Worker processes this machine can run at once: one per CPU core this process may use, and
    one per ``WORKER_BYTES`` (about 1 GB: a TensorFlow process before its model) of :func:`limit`."""
    return max(1, min(_cpus(), limit() // WORKER_BYTES))


def check_workers(n: int) -> None:
    """Raises an AblateError, one line, naming the bound if ``n`` workers are more than
    :func:`max_workers`: more processes than cores only share them, more than memory swap or die."""
    bound = max_workers()
    if n <= bound:
        return
    have, source = _limit()
    raise AblateError(
        f"{n} worker processes are more than this machine can run: at most {bound} ({_cpus()} CPU cores; "
        f"{_gb(have)} {source}, about {_gb(WORKER_BYTES)} per TensorFlow worker); use --workers {bound} "
        f"or fewer, or add workers on other machines with `ablate worker`."
    )


# --- the estimate ------------------------------------------------------------------------

def _sizes(model: Mapping[str, Any], hw: tuple[int, int] = INPUT_HW) -> tuple[float, float]:
    """(parameters, activation values per image) of the whole model on ``hw`` inputs: its branches and fusion."""
    params, values = 0.0, 0.0
    for branch, pooled in _branches(model):
        p, v = _branch_size(branch, pooled, hw)
        params, values = params + p, values + v
    if _key_for(model, FUSIONS):  # coarse-fine: the fusion works at the local branch's full width
        params += FUSION_WEIGHTS * _width(_setting(model, "filters"), _setting(model, "width_mult"), 0) ** 2
    return params, values


def _branches(model: Mapping[str, Any]) -> list[tuple[dict[str, Any], int]]:
    """Each branch's settings (``BRANCH``'s scalars and the kernel) with the factor its input is
    pooled by: the local one, and the global one of a coarse-fine model (its key whose blocks are
    ``BRANCHES``', ``model.global_branch``: its keys over the branch builder's defaults)."""
    out = [({k: _setting(model, k) for k in BRANCH.scalars} | {"kernel": _kernel(model)}, 1)]
    key = _key_for(model, BRANCHES)
    if key:
        given = dict(model.get(key) or {})
        name = str(given.get("type", DEFAULT_BRANCH))
        defaults = BRANCHES.schema(name).defaults if name in BRANCHES else {}
        merged = {k: _number(given.get(k, defaults.get(k)), k) for k in BRANCH.scalars} | {"kernel": _kernel(given)}
        downsample = given.get("downsample", defaults.get("downsample"))
        out.append((merged, downsample if isinstance(downsample, int) and downsample > 0 else 1))
    return out


def _branch_size(branch: Mapping[str, Any], pooled: int, hw: tuple[int, int] = INPUT_HW) -> tuple[float, float]:
    """(parameters, activation values per image) of one U-Net branch on an ``hw`` input pooled by ``pooled``."""
    depth, k = int(branch["depth"]), branch["kernel"]
    height, width = hw[0] / pooled, hw[1] / pooled
    params, values = 0.0, 0.0
    for level in range(depth):
        w = _width(branch["filters"], branch["width_mult"], level)
        params += (8 + 46 * k * k / 9) * w * w
        values += (height / 4**level) * width * w
    bottom = _width(branch["filters"], branch["width_mult"], depth)
    params += BOTTLENECK_WEIGHTS * bottom * bottom
    values += (height / 4**depth) * width * bottom
    return params, values


def _width(filters: Any, mult: Any, level: int) -> float:
    """Channels at ``level``, as ``ablate.models.unet.stage_filters`` rounds them (floats: no overflow)."""
    return max(1.0, float(round(float(filters) * float(mult) * 2**level)))


def _kernel(branch: Mapping[str, Any]) -> int:
    """The kernel size of a branch's stage block (``BRANCH``'s stage slot): the spec's, else the block's default."""
    slot = BRANCH.at(STAGE)[0]
    block = branch.get(slot.key) or slot.default
    name, kwargs = slot.registry.split(block) if block is not None else ("", {})
    default = slot.registry.schema(name).defaults.get("kernel_size") if name in slot.registry else None
    kernel = kwargs.get("kernel_size", default)
    return kernel if isinstance(kernel, int) and not isinstance(kernel, bool) else KERNEL


def _defaults(model: Mapping[str, Any]) -> dict[str, Any]:
    """The model builder's defaults, from the registry's schema (the manifest: no TensorFlow)."""
    return dict(MODELS.schema(str(model["type"])).defaults)


def _key_for(model: Mapping[str, Any], registry: Registry) -> str | None:
    """The model builder's key whose blocks are ``registry``'s (a coarse-fine model's ``fusion``, ``global_branch``)."""
    nested = MODELS.schema(str(model["type"])).nested
    return next((key for key, kind in nested.items() if kind == registry.key), None)


def _setting(model: Mapping[str, Any], key: str) -> float:
    """The spec's value of a model key, else the builder's default."""
    value = model.get(key)
    return _number(_defaults(model).get(key) if value is None else value, key)


def _number(value: Any, key: str) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return value if ok else BRANCH.scalars[key]  # a builder without the key: counted as a branch's default


# --- the machine -------------------------------------------------------------------------

def _limit() -> tuple[int, str]:
    """(bytes, where that figure comes from, in words for a message)."""
    text = os.environ.get(LIMIT_ENV, "").strip()
    if text:
        try:
            gb = float(text)
        except ValueError:
            gb = math.nan
        if not math.isfinite(gb) or gb <= 0:
            raise AblateError(f"{LIMIT_ENV}={text[:40]!r} is not a number of gigabytes > 0; "
                              f"set it like {LIMIT_ENV}=16, or unset it to use the free memory.")
        return int(gb * GB), f"set in {LIMIT_ENV}"
    found = [(n, s) for n, s in (_meminfo_available(), _cgroup_available()) if n is not None]
    if found:
        return min(found)
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "of physical memory"
    except (ValueError, OSError, AttributeError):
        return 2**62, "(memory unknown)"  # nothing to read: do not refuse


def _meminfo_available() -> tuple[int | None, str]:
    """MemAvailable of /proc/meminfo (Linux): free memory plus what the kernel can reclaim."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "free (MemAvailable)"
    except (OSError, ValueError, IndexError):
        pass
    return None, ""


def _cgroup_available() -> tuple[int | None, str]:
    """The container's limit less its use (cgroup v2 ``memory.max``, or v1), if it has one."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            cap = Path(limit_file).read_text().strip()
            if cap == "max" or int(cap) >= 2**60:  # no limit (v1 writes a huge number)
                return None, ""
            used = int(Path(usage_file).read_text().strip())
            return max(0, int(cap) - used), "free under the cgroup limit"
        except (OSError, ValueError):
            continue
    return None, ""


def _cpus() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _gb(n: float) -> str:
    return f"{n / GB:,.1f} GB"
