"""Autolog for plain PyTorch training loops, and ``watch`` for per-layer norms and histograms.

What is captured, from one ``mltrail.autolog()`` line and an ordinary loop::

    for x, y in loader:
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

* at each optimizer's first step: its class and constructor hyperparameters as params
  (``optimizer/name``, ``optimizer/lr``, ...; ``optimizer_1/...`` for a second optimizer) and the
  number of parameters it trains (``optimizer/num_params``);
* every ``log_every_n_steps`` optimizer steps (default 10): the learning rate of each param group
  (``lr``, ``lr/group_1``), the scalar loss that ``backward()`` was called on (``loss``; the mean
  when several backward calls feed one step) and the total norm ``clip_grad_norm_`` returned
  (``grad_norm``), at step = the optimizer's step count;
* with ``log_checkpoints=True``: every ``torch.save`` of a state dict, checkpoint dict or module
  to a file path, as an artifact under ``checkpoints/`` (copied in the background; files over
  ``reference_checkpoints_over`` bytes are recorded by reference: path, size, sha256).

Nothing forces a device synchronisation on a step that is not logged: the loss and the norm are
kept as detached tensors; on a logged step a CUDA value is copied to the host without blocking
and read once its copy has completed (a later step, or the end of the run).

Where it hooks in: a global optimizer step post hook (``register_optimizer_step_post_hook``);
``torch.autograd.backward`` (which ``Tensor.backward`` calls); ``torch.nn.utils.clip_grad_norm_``;
``torch.save``. Inside another integration's patched call (a Lightning ``Trainer.fit``) none of
this logs: that integration records the loop. Under ``torch.distributed`` only global rank zero
records.

The run: the active run; with none, the first step starts one (tagged ``mltrail.autolog=torch``),
which ends FINISHED when the interpreter exits, or FAILED after an unhandled exception.

``watch(model, log="gradients"|"parameters"|"all", log_freq=100)`` works with or without
autolog: every ``log_freq`` steps of an optimizer that trains ``model`` it logs the norm of each
parameter's gradient and/or weights as metrics (``gradients/<name>/norm``,
``parameters/<name>/norm``) and their histograms (min, max, mean, std, non-finite count and bin
counts) as one JSON artifact per logged step (``watch/step_<step>.json``).

Tested versions: torch 2.2 to 2.13 (:mod:`mltrail.autolog.registry`).
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import json
import logging
import os
import sys
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from mltrail.autolog import AutologConfig, Call, Patch, _safety, enable, safely
from mltrail.autolog.call import CURRENT

if TYPE_CHECKING:
    from mltrail.core.entities import Dataset
    from mltrail.core.fluent import ActiveRun
    from mltrail.core.writer import RunBuffer

NAME = "torch"
DEFAULT_LOG_EVERY_N_STEPS = 10
_log = logging.getLogger("mltrail.integrations.torch")


@dataclass(frozen=True)
class Config(AutologConfig):
    """PyTorch's options on top of the common ones.

    Attributes:
        log_checkpoints: log what ``torch.save`` writes to a file path (state dicts, checkpoint
            dicts, modules) as artifacts under ``checkpoints/``.
        reference_checkpoints_over: files larger than this many bytes are recorded by
            reference (path, size, sha256) instead of copied; None: always copy.
    """

    log_checkpoints: bool = False
    reference_checkpoints_over: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.log_checkpoints, bool):
            msg = f"autolog option log_checkpoints must be True or False, got {self.log_checkpoints!r}"
            from mltrail.core.errors import InvalidValueError

            raise InvalidValueError(msg)
        _check_threshold(self.reference_checkpoints_over)


def _check_threshold(value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        from mltrail.core.errors import InvalidValueError

        msg = f"reference_checkpoints_over must be a number of bytes (int >= 0) or None, got {value!r}"
        raise InvalidValueError(msg)


# ---------------------------------------------------------------------- pure helpers
# Optimizer constructor flags that choose an implementation, not a hyperparameter.
_IMPLEMENTATION_FLAGS = frozenset({"foreach", "fused", "capturable", "differentiable"})


def optimizer_prefix(index: int) -> str:
    """``"optimizer"`` for the first optimizer, ``"optimizer_<i>"`` for the others."""
    return "optimizer" if index == 0 else f"optimizer_{index}"


def _plain(value: Any) -> Any:
    """A hyperparameter value as a plain Python value (a 1-element tensor becomes a float)."""
    if hasattr(value, "numel") and hasattr(value, "item"):
        try:
            return value.item() if value.numel() == 1 else str(value.tolist())
        except Exception:  # noqa: BLE001 - a meta or sparse tensor: its text is good enough
            return str(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def optimizer_params(optimizer: Any, index: int = 0) -> dict[str, Any]:
    """The params that describe an optimizer: class, constructor hyperparameters, sizes.

    Example:
        >>> optimizer_params(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
        {'optimizer/name': 'SGD', 'optimizer/lr': 0.1, 'optimizer/momentum': 0.9, ...}
    """
    prefix = optimizer_prefix(index)
    out: dict[str, Any] = {f"{prefix}/name": type(optimizer).__name__}
    for key, value in sorted(getattr(optimizer, "defaults", {}).items()):
        if key in _IMPLEMENTATION_FLAGS or value is None or callable(value):
            continue
        out[f"{prefix}/{key}"] = _plain(value)
    groups = getattr(optimizer, "param_groups", [])
    out[f"{prefix}/param_groups"] = len(groups)
    out[f"{prefix}/num_params"] = optimizer_num_params(optimizer)
    return out


def optimizer_num_params(optimizer: Any) -> int:
    """The number of elements in the distinct tensors an optimizer updates."""
    seen: set[int] = set()
    total = 0
    for group in getattr(optimizer, "param_groups", []):
        for p in group.get("params", ()):
            if id(p) not in seen:
                seen.add(id(p))
                total += int(p.numel())
    return total


def lr_metrics(optimizer: Any, index: int = 0) -> dict[str, float]:
    """The learning rate of each param group: ``lr``, ``lr/group_1``...; ``optimizer_1/lr`` for index 1."""
    base = "lr" if index == 0 else f"{optimizer_prefix(index)}/lr"
    out: dict[str, float] = {}
    for g, group in enumerate(getattr(optimizer, "param_groups", [])):
        lr = group.get("lr")
        if lr is None:
            continue
        out[base if g == 0 else f"{base}/group_{g}"] = float(lr)
    return out


def param_counts(module: Any) -> dict[str, int]:
    """Total and trainable parameter counts of a module (shared tensors counted once)."""
    total = trainable = 0
    seen: set[int] = set()
    for p in module.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        n = int(p.numel())
        total += n
        if p.requires_grad:
            trainable += n
    return {"total_params": total, "trainable_params": trainable}


def model_summary_text(module: Any, max_depth: int = 1) -> str:
    """A table of a module's layers and parameter counts, without running the model.

    Args:
        module: the ``torch.nn.Module``.
        max_depth: how deep to list submodules (1: the direct children).
    """
    rows: list[tuple[str, str, str, str]] = []

    def visit(mod: Any, prefix: str, depth: int) -> None:
        for name, child in mod.named_children():
            full = f"{prefix}.{name}" if prefix else name
            counts = param_counts(child)
            rows.append((
                full, type(child).__name__, f"{counts['total_params']:,}", f"{counts['trainable_params']:,}"
            ))
            if depth < max_depth:
                visit(child, full, depth + 1)

    visit(module, "", 1)
    header = ("Name", "Type", "Params", "Trainable")
    table = [header, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip() for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    counts = param_counts(module)
    lines += [
        "",
        f"Model: {type(module).__module__}.{type(module).__qualname__}",
        f"Total params: {counts['total_params']:,}",
        f"Trainable params: {counts['trainable_params']:,}",
        f"Non-trainable params: {counts['total_params'] - counts['trainable_params']:,}",
    ]
    return "\n".join(lines) + "\n"


def _tensor_as_numpy(t: Any) -> Any:
    """A tensor's values as numpy without copying a CPU tensor (only sampled rows of others)."""
    t = t.detach()
    if t.device.type != "cpu":
        n = t.shape[0] if t.dim() else 0
        if n > 20_000:  # the fingerprint hashes 10,000 rows from each end: move only those
            import torch

            t = torch.cat([t[:10_000], t[-10_000:]])
        t = t.cpu()
    import torch

    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)  # numpy has no bfloat16; the bits identify the data as well
    return t.numpy()


def dataset_fingerprint(dataset: Any, *, name: str | None = None) -> Dataset:
    """Fingerprint a ``torch.utils.data.Dataset`` (never reading more than sampled rows).

    ``TensorDataset``: its tensors; a dataset with ``data``/``targets`` arrays (torchvision
    style): those; ``Subset``: the underlying dataset and the indices; anything else: its class,
    length and (when it has one) ``root``.
    """
    from mltrail.core.datasets import from_numpy
    from mltrail.core.entities import Dataset

    cls = type(dataset)
    label = name or cls.__name__
    tensors = getattr(dataset, "tensors", None)
    if isinstance(tensors, tuple) and tensors and all(hasattr(t, "detach") for t in tensors):
        arrays = [_tensor_as_numpy(t) for t in tensors[:2]]
        ds = from_numpy(arrays[0], arrays[1] if len(arrays) > 1 else None, name=label)
        return dataclasses.replace(ds, source_type="torch")
    data, targets = getattr(dataset, "data", None), getattr(dataset, "targets", None)
    if data is not None and hasattr(data, "shape"):
        features = _tensor_as_numpy(data) if hasattr(data, "detach") else data
        labels = targets
        if labels is not None and hasattr(labels, "detach"):
            labels = _tensor_as_numpy(labels)
        ds = from_numpy(features, labels if hasattr(labels, "__len__") else None, name=label)
        return dataclasses.replace(ds, source_type="torch")
    inner = getattr(dataset, "dataset", None)
    indices = getattr(dataset, "indices", None)
    h = hashlib.sha256(f"{cls.__module__}.{cls.__qualname__}".encode())
    profile: dict[str, Any] = {}
    source: dict[str, Any] = {"class": f"{cls.__module__}.{cls.__qualname__}"}
    if inner is not None and indices is not None:
        base = dataset_fingerprint(inner)
        h.update(base.digest.encode())
        idx = list(indices)
        h.update(repr(idx[:10_000] + idx[-10_000:]).encode())
        source["base"] = base.name
        source["base_digest"] = base.digest
    root = getattr(dataset, "root", None)
    if isinstance(root, (str, os.PathLike)):
        source["root"] = os.fspath(root)
        h.update(os.fspath(root).encode())
    try:
        n = len(dataset)
    except TypeError:  # an IterableDataset has no length
        n = None
    if n is not None:
        profile["num_rows"] = n
        h.update(str(n).encode())
    digest = h.hexdigest()[:16]
    return Dataset(
        name=label,
        digest=digest,
        source_type="torch",
        source=json.dumps(source),
        schema=None,
        profile=json.dumps(profile),
    )


# ---------------------------------------------------------------------- distributed
def global_rank() -> int:
    """This process's global rank: ``torch.distributed``'s once initialised, else ``RANK``."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return int(dist.get_rank())
    for var in ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID"):
        value = os.environ.get(var)
        if value:
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


# ---------------------------------------------------------------------- background file work
_io_lock = threading.Lock()
_io_executor: ThreadPoolExecutor | None = None
_io_pid = 0
_io_futures: deque[Future[Any]] = deque()


def submit_io(fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
    """Run file work (copying a checkpoint, writing a histogram) off the training thread.

    One worker keeps the order of submissions. Everything submitted is finished before the
    interpreter exits (and before the runs are ended there).
    """
    global _io_executor, _io_pid
    with _io_lock:
        if _io_executor is None or _io_pid != os.getpid():
            _io_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mltrail-torch-io")
            _io_pid = os.getpid()
            _io_futures.clear()
        future = _io_executor.submit(fn, *args)
        _io_futures.append(future)
        while _io_futures and _io_futures[0].done():
            _io_futures.popleft()
    return future


def wait_io(timeout: float | None = None) -> None:
    """Block until the file work submitted so far is done (its errors are logged, not raised)."""
    if _io_pid != os.getpid():
        return
    for future in list(_io_futures):
        try:
            future.result(timeout)
        except Exception:  # noqa: BLE001 - reported by the task itself
            _log.debug("background file work failed", exc_info=True)


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def log_file_artifact(
    client: Any, run_id: str, path: str, artifact_dir: str, reference_over: int | None
) -> dict[str, Any]:
    """Copy ``path`` under ``artifact_dir``, or record it by reference if it is large.

    Returns what was recorded: ``{"artifact": ..., "size": ..., "reference": bool, ...}``.
    """
    size = os.path.getsize(path)
    name = os.path.basename(path)
    record: dict[str, Any] = {"artifact": f"{artifact_dir}/{name}", "size": size, "reference": False}
    if reference_over is not None and size > reference_over:
        ref = {
            "path": os.path.abspath(path),
            "size": size,
            "sha256": file_sha256(path),
            "mtime": os.path.getmtime(path),
        }
        record.update(reference=True, artifact=f"{artifact_dir}/{name}.ref.json", sha256=ref["sha256"],
                      path=ref["path"])
        client.log_bytes(run_id, json.dumps(ref, indent=2).encode(), record["artifact"])
    else:
        client.log_artifact(run_id, path, artifact_dir)
    return record


# ---------------------------------------------------------------------- the run to log into
_started: set[str] = set()  # runs this integration started (they end at interpreter exit)


_rt: Any = None  # the engine's runtime for this integration (one object for the process's life)
_fluent: Any = None


def _runtime() -> Any:
    """The engine's live state for this integration (``.on``, ``.config``), or None."""
    global _rt
    if _rt is None:
        from mltrail.autolog import engine

        _rt = engine._runtimes.get(NAME)
    return _rt


def _on() -> bool:
    """Whether the torch integration is active (its patches in place)."""
    rt = _runtime()
    return rt is not None and bool(rt.on)


def _run_for(config: AutologConfig, *, start: bool = True) -> ActiveRun | None:
    """The run the loop logs into: the active one, else (rank zero) one we start."""
    global _fluent
    if _fluent is None:
        from mltrail.core import fluent

        _fluent = fluent
    active: ActiveRun | None = _fluent.active_run()
    if active is not None:
        if config.exclusive and active.info.run_id not in _started:
            return None
        return active
    if not start or global_rank() != 0:
        return None
    from mltrail.autolog import runs

    run = runs._start_owned(NAME, config, nested=False, run_name=None, tags=None)
    _started.add(run.info.run_id)
    _install_exit_drain()
    return run


_exit_registered = False


def _install_exit_drain() -> None:
    """Registered after the fluent API's own exit handler, so it runs first (atexit is LIFO)."""
    global _exit_registered
    if not _exit_registered:
        _exit_registered = True
        atexit.register(_drain_at_exit)


def _drain_at_exit() -> None:
    try:
        _deferred.poll(block=True)
        wait_io(timeout=60)
    except Exception:  # noqa: BLE001 - never fail interpreter exit
        _log.debug("draining at exit failed", exc_info=True)


# ---------------------------------------------------------------------- device scalars
class _Deferred:
    """Device scalars waiting for their non-blocking copy to the host to complete."""

    def __init__(self) -> None:
        self.items: deque[tuple[RunBuffer, int, list[str], Any, Any]] = deque()

    def add(self, buffer: RunBuffer, step: int, values: Mapping[str, Any]) -> None:
        """Log ``values`` (floats, or 0-d tensors) at ``step`` without waiting for a device."""
        ready: dict[str, float] = {}
        waiting: dict[Any, dict[str, Any]] = {}
        for key, value in values.items():
            if self.waits(value):
                waiting.setdefault(value.device, {})[key] = value
            elif hasattr(value, "item"):
                ready[key] = float(value.item())  # CPU (no device to wait for) or another backend
            else:
                ready[key] = value
        if ready:
            buffer.log_metrics(ready, step)
        for group in waiting.values():
            host, event = self.copy(list(group.values()))
            self.items.append((buffer, step, list(group), host, event))
        if self.items:
            self.poll(block=False)

    @staticmethod
    def waits(value: Any) -> bool:
        """Whether reading ``value`` on the host would wait for a device (a CUDA tensor)."""
        return hasattr(value, "device") and value.device.type == "cuda"

    @staticmethod
    def copy(tensors: list[Any]) -> tuple[Any, Any]:
        """Start copying device scalars to the host; return the host tensor and a CUDA event."""
        import torch

        stacked = torch.stack([t.detach().float().reshape(()) for t in tensors])
        host = stacked.to("cpu", non_blocking=True)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(stacked.device))
        return host, event

    def poll(self, *, block: bool) -> None:
        items = self.items
        while items:
            buffer, step, keys, host, event = items[0]
            if block:
                event.synchronize()
            elif not event.query():
                return
            items.popleft()
            try:
                buffer.log_metrics(dict(zip(keys, host.tolist(), strict=True)), step)
            except Exception:  # noqa: BLE001 - the run ended meanwhile: nothing to log into
                _log.debug("dropping values of step %s: the run has ended", step, exc_info=True)


_deferred = _Deferred()


# ---------------------------------------------------------------------- the training-loop hooks
# The hot path: each iteration of the user's loop calls backward(), maybe clip_grad_norm_(),
# and the optimizer's step(). On a step that logs nothing, the hooks only keep a reference and
# count; checking and reading the loss, the learning rates and the run happen on the steps
# that log, and what can be worked out once (metric keys, the run's buffer) is kept on the
# optimizer's state.
class _OptState:
    __slots__ = ("buffer", "config", "index", "loss_key", "lr_key", "norm_key", "run", "run_id", "steps")

    def __init__(self, index: int) -> None:
        self.index = index
        self.steps = 0
        self.run_id: str | None = None  # None: no run looked for yet; "": none to log into
        self.run: Any = None  # the ActiveRun this optimizer last logged into...
        self.config: Any = None  # ...found under this config...
        self.buffer: Any = None  # ...and its buffer
        prefix = "" if index == 0 else f"{optimizer_prefix(index)}/"
        self.loss_key = f"{prefix}loss"
        self.norm_key = f"{prefix}grad_norm"
        self.lr_key = f"{prefix}lr"


_opt_states: weakref.WeakKeyDictionary[Any, _OptState] = weakref.WeakKeyDictionary()
# What backward() was called on since the last step: the tensor as given (checked when a step
# logs), or, after several backward calls, the detached sum of the scalar losses.
_pending_loss: Any = None
_pending_count = 0  # how many backward calls _pending_loss holds (meaningful while it is set)
_pending_norm: Any = None  # what clip_grad_norm_ returned since the last step
_hook_handle: Any = None
_hook_lock = threading.Lock()
_suspended = 0  # > 0 while another integration records the loop outside a patched call
_SEQUENCES = (list, tuple)


def suspend() -> None:
    """Stop recording optimizer steps until :func:`resume` (another integration has the loop).

    Needed where a framework runs the loop outside any patched call, as Lightning does in a
    ``ddp_spawn`` worker; inside a patched call (``Trainer.fit``) the hooks stand aside anyway.
    """
    global _suspended
    _suspended += 1


def resume() -> None:
    """Undo one :func:`suspend`."""
    global _suspended
    _suspended = max(0, _suspended - 1)


def _ensure_step_hook() -> None:
    global _hook_handle
    if _hook_handle is not None:
        return
    with _hook_lock:
        if _hook_handle is None:
            from torch.optim.optimizer import register_optimizer_step_post_hook

            _hook_handle = register_optimizer_step_post_hook(_on_optimizer_step)


def _remove_step_hook() -> None:
    global _hook_handle
    with _hook_lock:
        if _hook_handle is not None:
            _hook_handle.remove()
            _hook_handle = None


_TORCH_DIR = ""


def _adopt_torch_frames(frame: Any) -> None:
    """Let a warning from our hook name the user's ``optimizer.step()`` line.

    Our hook is called through torch's frames (the step wrapper, an LR scheduler's counter);
    marking their code as dispatch frames makes the engine attribute a warning to the first
    frame outside them: the user's code. Done only when a warning may follow.
    """
    global _TORCH_DIR
    if not _TORCH_DIR:
        torch_file = getattr(sys.modules.get("torch"), "__file__", None) or "torch"
        _TORCH_DIR = os.path.dirname(os.path.abspath(torch_file)) + os.sep
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_TORCH_DIR):
        _safety.wrapper_codes.add(frame.f_code)
        frame = frame.f_back


def _nobody() -> None:
    return None


_last_ref: Callable[[], Any] = _nobody  # weak reference to the optimizer that stepped last
_last_state: Any = None  # and its _OptState


def _on_optimizer_step(optimizer: Any, args: Any, kwargs: Any) -> None:
    """torch's global optimizer step post hook: count the step, log every n steps.

    Runs on every optimizer step: the safety net is written out here, as the engine's wrapper
    does, to spare a call per step.
    """
    global _pending_loss, _pending_norm
    rt = _rt if _rt is not None else _runtime()
    if rt is None or not rt.on:
        _remove_step_hook()  # autolog was turned off: leave torch's hook registry as it was
        return
    if _suspended or CURRENT.get() is not None:  # another integration records this loop
        return
    loss, norm = _pending_loss, _pending_norm
    _pending_loss = _pending_norm = None
    try:
        if _safety._faults_on:
            _safety._fault_check(NAME, "optimizer_step")
        state = _last_state if _last_ref() is optimizer else _state_of(optimizer)
        state.steps += 1
        config = rt.config
        if state.steps % (config.log_every_n_steps or DEFAULT_LOG_EVERY_N_STEPS) and state.run_id is not None:
            if _deferred.items:
                _deferred.poll(block=False)
            return
        _log_step(optimizer, state, loss, _pending_count, norm, config)
    except Exception as exc:
        if _safety.strict():
            raise
        _adopt_torch_frames(sys._getframe(1))
        _safety.report(NAME, "optimizer_step", exc)


def _state_of(optimizer: Any) -> _OptState:
    global _last_ref, _last_state
    state = _opt_states.get(optimizer)
    if state is None:
        state = _opt_states[optimizer] = _OptState(len(_opt_states))
    _last_ref, _last_state = weakref.ref(optimizer), state
    return state


def _log_step(optimizer: Any, state: _OptState, loss: Any, count: int, norm: Any, config: AutologConfig) -> None:
    """A step that logs, or an optimizer's first: its params once per run; lr, loss, grad_norm."""
    run = state.run
    if run is None or config is not state.config or _fluent.active_run() is not run:
        run = _run_for(config)
        if run is None:
            state.run_id = ""  # nothing to log into: look again at the next logged step
            state.run = None
            return
        state.run, state.config, state.buffer = run, config, run._buffer
        if state.run_id != run.info.run_id:
            state.run_id = run.info.run_id
            _log_params_lenient(state.buffer, optimizer_params(optimizer, state.index))
    if state.steps % (config.log_every_n_steps or DEFAULT_LOG_EVERY_N_STEPS):
        return
    groups = optimizer.param_groups
    lr = groups[0].get("lr") if len(groups) == 1 else None
    values: dict[str, Any] = {state.lr_key: lr} if type(lr) is float else lr_metrics(optimizer, state.index)
    device_values = False
    if loss is not None:
        if count > 1:
            loss = loss / count  # the detached sum of checked scalars
        value = _scalar_value(loss)
        if value is not None:
            device_values = type(value) is not float
            values[state.loss_key] = value
    if norm is not None:
        value = _scalar_value(norm)
        if value is not None:
            device_values = device_values or type(value) is not float
            values[state.norm_key] = value
    if device_values or _deferred.items:
        _deferred.add(state.buffer, state.steps, values)
    else:
        state.buffer.log_metrics(values, state.steps)


def _scalar_value(tensor: Any) -> Any:
    """What a logged step records of a scalar tensor (the loss, the gradient norm).

    Its value, read now, for a CPU tensor; the tensor itself on a CUDA device (read once its
    copy to the host completes, without waiting); None for anything but a floating-point
    scalar (what a backward() call that then failed was given).
    """
    try:
        if not tensor.is_cuda:
            value = tensor.item()
            return value if type(value) is float else None
        return tensor if tensor.numel() == 1 and tensor.is_floating_point() else None
    except Exception:  # noqa: BLE001 - not a tensor, or not a one-element one: nothing to log
        return None


def _log_params_lenient(buffer: RunBuffer, params: Mapping[str, Any]) -> None:
    """Log params, leaving out any that the run already holds with another value."""
    from mltrail.core.errors import ParamConflictError

    try:
        buffer.log_params(params)
    except ParamConflictError:
        for key, value in params.items():
            try:
                buffer.log_params({key: value})
            except ParamConflictError:
                _log.debug("param %s already logged with another value; kept the first", key)


def _scalar_loss(tensor: Any, gradient: Any) -> Any:
    if gradient is not None or not hasattr(tensor, "requires_grad"):
        return None
    if not tensor.is_floating_point():
        return None
    if tensor.dim() == 0:
        return tensor.detach()
    return tensor.detach().reshape(()) if tensor.numel() == 1 else None


def _pre_backward(call: Call) -> None:
    """``torch.autograd.backward(tensors, grad_tensors=None, ...)``, which ``Tensor.backward`` calls."""
    global _pending_loss, _pending_count
    if _hook_handle is None:
        _ensure_step_hook()
    args = call.args
    if len(args) > 1:  # Tensor.backward passes (self, gradient, retain_graph, create_graph)
        if args[1] is not None:
            return  # an explicit gradient: not a scalar loss
        tensor = args[0]
    else:
        kwargs = call.kwargs
        if kwargs.get("grad_tensors") is not None:
            return
        tensor = args[0] if args else kwargs.get("tensors")
    if type(tensor) in _SEQUENCES:
        if len(tensor) != 1:
            return
        tensor = tensor[0]
    if _pending_loss is None:
        # Kept as given, not detached: backward() frees the graph's buffers anyway, the step
        # hook lets go of it, and only a step that logs checks and reads it.
        _pending_loss = tensor
        _pending_count = 1
        return
    _accumulate_loss(tensor)


def _accumulate_loss(tensor: Any) -> None:
    """A second backward() before the step (gradient accumulation): keep the detached sum."""
    global _pending_loss, _pending_count
    loss = _scalar_loss(tensor, None)
    if loss is None:
        return
    if _pending_count == 1:  # the first is still as backward() got it: check it now
        first = _scalar_loss(_pending_loss, None)
        if first is None:
            _pending_loss = loss
            return
        _pending_loss = first
    _pending_loss = _pending_loss + loss
    _pending_count += 1


def _see_past_tensor_backward() -> None:
    """Let warnings from the backward patch name the user's ``loss.backward()`` line.

    Only ``torch.autograd.backward`` is patched (one wrapper per backward call, not two):
    ``Tensor.backward`` calls it. Marking ``Tensor.backward``'s code as a dispatch frame makes
    the engine attribute a warning to its caller, the user's code.
    """
    tensor_mod = sys.modules.get("torch._tensor")
    code = getattr(getattr(getattr(tensor_mod, "Tensor", None), "backward", None), "__code__", None)
    if code is not None:
        _safety.wrapper_codes.add(code)


def _post_clip(call: Call, result: Any) -> None:
    global _pending_norm
    _pending_norm = result  # computed under no_grad: nothing to detach; read only on a logged step


# ---------------------------------------------------------------------- torch.save
def _save_target(call: Call) -> tuple[Any, str] | None:
    obj = call.args[0] if call.args else call.kwargs.get("obj")
    f = call.args[1] if len(call.args) > 1 else call.kwargs.get("f")
    if not isinstance(f, (str, os.PathLike)):
        return None
    return obj, os.fspath(f)


def _is_checkpoint(obj: Any) -> bool:
    if isinstance(obj, Mapping):
        return True
    torch_nn = sys.modules.get("torch.nn")
    return torch_nn is not None and isinstance(obj, torch_nn.Module)


def _wants_checkpoints(call: Call) -> bool:
    return bool(getattr(call.config, "log_checkpoints", False))


def _post_save(call: Call, result: Any) -> None:
    target = _save_target(call)
    if target is None or not _is_checkpoint(target[0]):
        return
    if global_rank() != 0:
        return
    run = _run_for(call.config, start=True)
    if run is None:
        return
    path = target[1]
    if not os.path.isfile(path):
        return
    reference_over = getattr(call.config, "reference_checkpoints_over", None)
    submit_io(_log_checkpoint_file, run._client, run.info.run_id, path, reference_over)


def _log_checkpoint_file(client: Any, run_id: str, path: str, reference_over: int | None) -> None:
    try:
        log_file_artifact(client, run_id, path, "checkpoints", reference_over)
    except Exception:  # noqa: BLE001 - off the user's thread: report, never raise
        _log.warning("mltrail: could not log checkpoint %s", path, exc_info=True)


# ---------------------------------------------------------------------- watch
_Log = Literal["gradients", "parameters", "all"]


class Watch:
    """What :func:`watch` returns: call :meth:`remove` to stop watching."""

    def __init__(self, model: Any, log: _Log, log_freq: int, bins: int) -> None:
        self._model = weakref.ref(model)
        self.log = log
        self.log_freq = log_freq
        self.bins = bins
        self.steps = 0
        self._param_ids = frozenset(id(p) for p in model.parameters())
        self._matches: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
        self._logged_counts = False

    def __repr__(self) -> str:
        return f"<mltrail.torch.Watch log={self.log!r} log_freq={self.log_freq} steps={self.steps}>"

    def remove(self) -> None:
        """Stop watching the model."""
        unwatch_handle(self)

    def _trains_model(self, optimizer: Any) -> bool:
        hit = self._matches.get(optimizer)
        if hit is None:
            hit = any(
                id(p) in self._param_ids for g in optimizer.param_groups for p in g.get("params", ())
            )
            self._matches[optimizer] = hit
        return hit

    def on_step(self, optimizer: Any) -> None:
        if not self._trains_model(optimizer):
            return
        self.steps += 1
        if self.steps % self.log_freq:
            return
        model = self._model()
        if model is None or global_rank() != 0:
            return
        safely(NAME, "watch", self._record, model)

    def _record(self, model: Any) -> None:
        from mltrail.core import fluent

        run = fluent._current()  # the active run, else a new one (as mltrail.log_metric does)
        if not self._logged_counts:
            self._logged_counts = True
            _log_params_lenient(run._buffer, {f"model/{k}": v for k, v in param_counts(model).items()})
        kinds = ("gradients", "parameters") if self.log == "all" else (self.log,)
        stats = tensor_stats(model, kinds, self.bins)
        metrics = {
            f"{kind}/{name}/norm": entry["norm"] for kind in kinds for name, entry in stats[kind].items()
        }
        if metrics:
            run._buffer.log_metrics(metrics, self.steps)
        document = {"step": self.steps, "bins": self.bins, **stats}
        submit_io(_write_histograms, run._client, run.info.run_id, document, f"watch/step_{self.steps}.json")


_STAT_NAMES = ("norm", "min", "max", "mean", "std", "nonfinite")


def tensor_stats(model: Any, kinds: Iterable[str], bins: int = 32) -> dict[str, dict[str, Any]]:
    """Norm, min, max, mean, std, non-finite count and a histogram of each parameter.

    ``kinds``: ``"gradients"`` (of parameters that have one) and/or ``"parameters"``. Non-finite
    values are counted and left out of the other statistics. Everything is computed on the
    parameters' device and read back with one transfer per device.
    """
    import torch

    rows: dict[Any, list[tuple[str, str, Any]]] = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            for kind in kinds:
                t = p.grad if kind == "gradients" else p
                if t is None or not t.is_floating_point() or t.numel() == 0 or t.is_sparse:
                    continue
                x = t.detach().reshape(-1).float()
                finite = torch.isfinite(x)
                nonfinite = (~finite).sum().float()
                x = torch.where(finite, x, torch.zeros((), dtype=x.dtype, device=x.device))
                row = torch.cat([
                    torch.stack([
                        torch.linalg.vector_norm(x), x.min(), x.max(), x.mean(), x.std(correction=0),
                        nonfinite,
                    ]),
                    torch.histc(x, bins=bins),
                ])
                rows.setdefault(x.device, []).append((kind, name, row))
    out: dict[str, dict[str, Any]] = {kind: {} for kind in kinds}
    for entries in rows.values():
        values = torch.stack([row for _, _, row in entries]).cpu().tolist()
        for (kind, name, _), vals in zip(entries, values, strict=True):
            entry: dict[str, Any] = dict(zip(_STAT_NAMES, vals[: len(_STAT_NAMES)], strict=True))
            entry["nonfinite"] = int(entry["nonfinite"])
            entry["counts"] = [int(c) for c in vals[len(_STAT_NAMES):]]
            out[kind][name] = entry
    return out


def _write_histograms(client: Any, run_id: str, document: dict[str, Any], path: str) -> None:
    try:
        client.log_bytes(run_id, json.dumps(document, allow_nan=True).encode(), path)
    except Exception:  # noqa: BLE001 - off the user's thread: report, never raise
        _log.warning("mltrail: could not write %s", path, exc_info=True)


_watches: list[Watch] = []
_watch_handle: Any = None


def _on_step_watch(optimizer: Any, args: Any, kwargs: Any) -> None:
    for w in list(_watches):
        w.on_step(optimizer)


def watch(
    model: Any,
    log: _Log = "gradients",
    log_freq: int = 100,
    *,
    bins: int = 32,
) -> Watch:
    """Log per-parameter gradient and/or weight norms and histograms every ``log_freq`` steps.

    The steps counted are those of any optimizer that updates ``model``'s parameters, in a
    plain loop or under Lightning. Norms are metrics (``gradients/<name>/norm``,
    ``parameters/<name>/norm``); histograms go to ``watch/step_<step>.json`` artifacts. The
    model's total and trainable parameter counts become params ``model/total_params`` and
    ``model/trainable_params``. Logs into the active run (starting one if there is none);
    only global rank zero records.

    Args:
        model: the ``torch.nn.Module`` to watch.
        log: ``"gradients"``, ``"parameters"`` or ``"all"``.
        log_freq: log every this many optimizer steps.
        bins: histogram bins.

    Returns:
        A :class:`Watch`; ``.remove()`` stops it.

    Example:
        >>> handle = mltrail.torch.watch(model, log="all", log_freq=50)
        >>> train(model)
        >>> handle.remove()
    """
    global _watch_handle
    from mltrail.core.errors import InvalidValueError

    if log not in ("gradients", "parameters", "all"):
        msg = f"watch(log=...) must be 'gradients', 'parameters' or 'all', got {log!r}"
        raise InvalidValueError(msg)
    for name, value in (("log_freq", log_freq), ("bins", bins)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            msg = f"watch({name}=...) must be a positive int, got {value!r}"
            raise InvalidValueError(msg)
    if not hasattr(model, "named_parameters"):
        msg = f"watch() expects a torch.nn.Module, got {type(model).__name__}"
        raise InvalidValueError(msg)
    for existing in list(_watches):
        if existing._model() is model:
            unwatch_handle(existing)
    handle = Watch(model, log, log_freq, bins)
    _watches.append(handle)
    if _watch_handle is None:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        _watch_handle = register_optimizer_step_post_hook(_on_step_watch)
    return handle


def unwatch(model: Any = None) -> None:
    """Stop watching ``model`` (every model when None)."""
    for w in list(_watches):
        if model is None or w._model() is model:
            unwatch_handle(w)


def unwatch_handle(handle: Watch) -> None:
    global _watch_handle
    if handle in _watches:
        _watches.remove(handle)
    if not _watches and _watch_handle is not None:
        _watch_handle.remove()
        _watch_handle = None


# ---------------------------------------------------------------------- patches and autolog
_see_past_tensor_backward()

PATCHES = (
    Patch(owner="torch.autograd", path="backward", pre=_pre_backward, run="none"),
    Patch(owner="torch.nn.utils", path="clip_grad_norm_", post=_post_clip, run="none"),
    Patch(owner="torch.nn.utils.clip_grad", path="clip_grad_norm_", post=_post_clip, run="none"),
    Patch(owner="torch", path="save", post=_post_save, run="none", when=_wants_checkpoints),
    Patch(owner="torch.serialization", path="save", post=_post_save, run="none", when=_wants_checkpoints),
)


def autolog(
    *,
    disable: bool = False,
    exclusive: bool = False,
    silent: bool = False,
    log_models: bool = True,
    log_datasets: bool = True,
    log_every_n_steps: int | None = None,
    extra_tags: Mapping[str, str] | None = None,
    disable_for_unsupported_versions: bool = False,
    log_checkpoints: bool = False,
    reference_checkpoints_over: int | None = None,
) -> None:
    """Record plain PyTorch training loops: optimizer params, lr, loss, gradient norm, checkpoints.

    Args:
        disable: stop, and restore every patched function.
        exclusive: log only into runs autolog starts, never into a run the user started.
        silent: no warnings from this integration.
        log_models: unused for plain loops (they have no end-of-training event; see
            ``log_checkpoints``).
        log_datasets: unused for plain loops.
        log_every_n_steps: log lr, loss and grad_norm every n optimizer steps (default 10).
        extra_tags: tags set on every run this integration starts.
        disable_for_unsupported_versions: leave torch versions outside the tested range alone.
        log_checkpoints: log files written by ``torch.save`` as artifacts under ``checkpoints/``.
        reference_checkpoints_over: record files larger than this many bytes by reference
            (path, size, sha256) instead of copying them.

    Example:
        >>> import mltrail.integrations.torch as mltrail_torch
        >>> mltrail_torch.autolog(log_every_n_steps=1, log_checkpoints=True)
        >>> for x, y in loader:
        ...     opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()
    """
    enable(NAME, Config(**locals()))
    if disable:
        _remove_step_hook()


def _reset_for_tests() -> None:
    """Forget optimizers, pending values and watches (test isolation)."""
    global _pending_loss, _pending_norm, _pending_count, _suspended, _last_ref, _last_state
    _remove_step_hook()
    _suspended = 0
    _opt_states.clear()
    _last_ref, _last_state = _nobody, None
    _pending_loss = _pending_norm = None
    _pending_count = 0
    _deferred.items.clear()
    _started.clear()
    unwatch()
    wait_io()
