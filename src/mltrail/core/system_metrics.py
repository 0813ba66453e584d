"""System metrics: a sampler thread that logs CPU, memory, disk, network and GPU use.

Started by ``start_run(log_system_metrics=True)``, by ``enable_system_metrics_logging()`` or by
``MLTRAIL_ENABLE_SYSTEM_METRICS_LOGGING=true``. Every ``interval`` seconds (default 10,
``MLTRAIL_SYSTEM_METRICS_SAMPLING_INTERVAL``) one call ``log_metrics(metrics, step)`` logs,
with ``step`` counting samples from 0::

    system/cpu_utilization_percentage       whole host, over the last interval
    system/system_memory_usage_megabytes    total - available
    system/system_memory_usage_percentage
    system/process_rss_megabytes            this process
    system/disk_usage_percentage            the filesystem of the working directory
    system/disk_read_megabytes              per-interval deltas, where the OS reports them
    system/disk_write_megabytes
    system/network_receive_megabytes        per-interval deltas, all interfaces
    system/network_transmit_megabytes
    system/gpu_<i>_utilization_percentage   for each GPU this process may use
    system/gpu_<i>_memory_usage_megabytes
    system/gpu_<i>_memory_usage_percentage
    system/gpu_<i>_power_watts
    system/gpu_<i>_temperature_celsius

Megabytes are 10**6 bytes (MLflow's unit for the same keys). ``<i>`` is the CUDA ordinal the
process sees (``cuda:<i>``), i.e. the position in ``CUDA_VISIBLE_DEVICES``, not NVML's index.

The host is read with psutil, GPUs with NVIDIA's NVML binding (``nvidia-ml-py``, imported as
``pynvml``; ``pip install 'mltrail[gpu]'``). A failing reading never reaches the program: it
is logged at debug level and that value is left out of the sample.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from mltrail.core.errors import InvalidValueError

logger = logging.getLogger("mltrail.system_metrics")

ENABLE_ENV = "MLTRAIL_ENABLE_SYSTEM_METRICS_LOGGING"
INTERVAL_ENV = "MLTRAIL_SYSTEM_METRICS_SAMPLING_INTERVAL"
DEFAULT_INTERVAL = 10.0
THREAD_NAME = "mltrail-system-metrics"
PREFIX = "system/"

#: Paths whose existence says an NVIDIA driver and GPU are present (read at call time, so a
#: test can point it elsewhere).
NVIDIA_DEVICE_PATHS: tuple[str, ...] = ("/proc/driver/nvidia/gpus", "/dev/nvidia0")

_MB = 1_000_000
# How long stop() waits for the thread to wind down. Nothing is logged after stop() returns
# whether or not the thread has ended (see _log_lock); this only bounds the wait for cleanup.
_JOIN_TIMEOUT = 5.0

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})

_nvml_notice_given = False
_nvml_notice_lock = threading.Lock()


class Sampler(Protocol):
    """One source of readings. ``sample`` returns metric names without the ``system/`` prefix.

    A sampler takes its baseline (for deltas) when it is constructed; ``close`` releases what
    it holds. Both run on the sampler thread.
    """

    def sample(self) -> Mapping[str, float]: ...

    def close(self) -> None: ...


def resolve_interval(interval: float | None) -> float:
    """Return the sampling interval in seconds: ``interval``, else the env variable, else 10.

    Raises:
        InvalidValueError: the interval is not a finite number greater than 0.
    """
    source = "interval"
    value: object = interval
    if interval is None:
        raw = os.environ.get(INTERVAL_ENV, "").strip()
        if not raw:
            return DEFAULT_INTERVAL
        source, value = INTERVAL_ENV, raw
    try:
        if isinstance(value, bool):
            raise TypeError
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        msg = f"{source} must be a number of seconds greater than 0, got {value!r}"
        raise InvalidValueError(msg) from None
    if not math.isfinite(seconds) or seconds <= 0:
        msg = f"{source} must be a number of seconds greater than 0, got {value!r}"
        raise InvalidValueError(msg)
    return seconds


def system_metrics_enabled_by_env() -> bool:
    """Return whether ``MLTRAIL_ENABLE_SYSTEM_METRICS_LOGGING`` asks for system metrics.

    Raises:
        InvalidValueError: the variable holds something other than true/false, 1/0, yes/no, on/off.
    """
    raw = os.environ.get(ENABLE_ENV, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    msg = f"{ENABLE_ENV} must be 'true' or 'false', got {os.environ[ENABLE_ENV]!r}"
    raise InvalidValueError(msg)


class SystemMetricsMonitor:
    """Sample system metrics on a daemon thread and hand them to ``log_metrics``.

    A monitor runs once: ``start`` then ``stop``. Sampling starts one interval after ``start``.

    Args:
        log_metrics: called as ``log_metrics(metrics, step)`` once per sample, on the thread.
        interval: seconds between samples; ``None`` reads the env variable, default 10.
        samplers: what to read; ``None`` builds the default set (host + visible GPUs) on
            the thread, so that NVML's start-up does not delay the caller.

    Example:
        >>> monitor = SystemMetricsMonitor(lambda metrics, step: print(step, metrics), interval=1)
        >>> monitor.start()
        >>> monitor.stop()
    """

    def __init__(
        self,
        log_metrics: Callable[[dict[str, float], int], None],
        *,
        interval: float | None = None,
        samplers: Sequence[Sampler] | None = None,
    ) -> None:
        self._log_metrics = log_metrics
        self.interval = resolve_interval(interval)
        self._samplers = list(samplers) if samplers is not None else None
        self._stop_event = threading.Event()
        # Held while handing a sample to log_metrics; stop() takes it after setting _closed,
        # so no call of log_metrics begins or is still running once stop() has returned.
        self._log_lock = threading.RLock()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._step = 0

    @property
    def running(self) -> bool:
        """Whether the sampler thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the daemon thread ``mltrail-system-metrics``; a second call does nothing."""
        if self._thread is not None or self._closed:
            return
        if self._samplers is None:
            # Cheap (a spec lookup and two stats), and on the caller's thread so the warning
            # points at user code and is not swallowed by the thread's safety net.
            _notice_missing_nvml()
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling. Returns promptly; nothing is logged after it returns."""
        self._stop_event.set()
        with self._log_lock:
            self._closed = True
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(_JOIN_TIMEOUT)

    def _run(self) -> None:
        samplers: list[Sampler] = []
        try:
            samplers = self._samplers if self._samplers is not None else default_samplers()
            started = time.monotonic()
            ticks = 1
            while not self._stop_event.wait(max(0.0, started + ticks * self.interval - time.monotonic())):
                self._sample_once(samplers)
                # Skip the slots a slow sample overran rather than sampling in a burst.
                ticks = max(ticks + 1, int((time.monotonic() - started) / self.interval) + 1)
        except Exception:
            logger.debug("system metrics thread failed", exc_info=True)
        finally:
            for sampler in samplers:
                try:
                    sampler.close()
                except Exception:
                    logger.debug("closing %r failed", sampler, exc_info=True)

    def _sample_once(self, samplers: Sequence[Sampler]) -> None:
        metrics: dict[str, float] = {}
        for sampler in samplers:
            try:
                for name, value in sampler.sample().items():
                    metrics[PREFIX + name] = float(value)
            except Exception:
                logger.debug("sampler %r failed", sampler, exc_info=True)
        if not metrics:
            return
        with self._log_lock:
            if self._closed:
                return
            try:
                self._log_metrics(metrics, self._step)
            except Exception:
                logger.debug("logging system metrics failed", exc_info=True)
            self._step += 1


def default_samplers() -> list[Sampler]:
    """Build the host samplers (if psutil is installed) and the GPU sampler (if any GPU)."""
    samplers: list[Sampler] = []
    try:
        import psutil  # noqa: F401
    except ImportError:
        logger.warning("psutil is not installed; no CPU, memory, disk or network metrics")
    else:
        for factory in (CPUSampler, MemorySampler, DiskSampler, NetworkSampler):
            try:
                samplers.append(factory())
            except Exception:
                logger.debug("cannot sample %s", factory.__name__, exc_info=True)
    gpu = GPUSampler.create()
    if gpu is not None:
        samplers.append(gpu)
    return samplers


def _read_into(metrics: dict[str, float], read: Callable[[], Mapping[str, float]]) -> None:
    """Merge ``read()`` into ``metrics``; a failure leaves those values out."""
    try:
        metrics.update(read())
    except Exception:
        logger.debug("reading %s failed", getattr(read, "__name__", read), exc_info=True)


class CPUSampler:
    """Host CPU utilisation over the interval, from our own baseline.

    ``psutil.cpu_percent(interval=None)`` keeps one module-wide baseline, which the user's own
    calls would move; this sampler keeps its own.
    """

    def __init__(self) -> None:
        import psutil

        self._cpu_times = psutil.cpu_times
        self._last = _busy_total(self._cpu_times())

    def sample(self) -> dict[str, float]:
        busy, total = _busy_total(self._cpu_times())
        last_busy, last_total = self._last
        self._last = (busy, total)
        if total <= last_total:
            return {"cpu_utilization_percentage": 0.0}
        percent = 100.0 * (busy - last_busy) / (total - last_total)
        return {"cpu_utilization_percentage": min(100.0, max(0.0, percent))}

    def close(self) -> None:
        pass


def _busy_total(times: Any) -> tuple[float, float]:
    # As psutil does: guest time is already counted in user time on Linux; idle and iowait
    # are not busy.
    total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
    idle = times.idle + getattr(times, "iowait", 0.0)
    return total - idle, total


class MemorySampler:
    """System memory in use (total - available) and this process's resident set size."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._process = psutil.Process()

    def sample(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        _read_into(metrics, self._system)
        _read_into(metrics, self._rss)
        return metrics

    def _system(self) -> dict[str, float]:
        memory = self._psutil.virtual_memory()
        return {
            "system_memory_usage_megabytes": (memory.total - memory.available) / _MB,
            "system_memory_usage_percentage": float(memory.percent),
        }

    def _rss(self) -> dict[str, float]:
        if self._process.pid != os.getpid():  # after a fork, measure the child
            self._process = self._psutil.Process()
        return {"process_rss_megabytes": self._process.memory_info().rss / _MB}

    def close(self) -> None:
        pass


class DiskSampler:
    """Disk usage of one filesystem, and bytes read/written since the last sample.

    Args:
        path: a path on the filesystem to watch; default the working directory.
        io_counters: returns ``(read_bytes, write_bytes)`` or ``None``; default psutil's.
    """

    def __init__(
        self,
        path: str | None = None,
        io_counters: Callable[[], tuple[int, int] | None] | None = None,
    ) -> None:
        import psutil

        self._psutil = psutil
        self._path = path if path is not None else os.getcwd()
        self._io_counters = io_counters if io_counters is not None else self._psutil_io
        self._last = self._io_counters()

    def _psutil_io(self) -> tuple[int, int] | None:
        counters = self._psutil.disk_io_counters(nowrap=True)
        return None if counters is None else (counters.read_bytes, counters.write_bytes)

    def sample(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        _read_into(metrics, self._usage)
        _read_into(metrics, self._io)
        return metrics

    def _usage(self) -> dict[str, float]:
        return {"disk_usage_percentage": float(self._psutil.disk_usage(self._path).percent)}

    def _io(self) -> dict[str, float]:
        now, last = self._io_counters(), self._last
        self._last = now
        if now is None or last is None:
            return {}
        return {
            "disk_read_megabytes": max(0, now[0] - last[0]) / _MB,
            "disk_write_megabytes": max(0, now[1] - last[1]) / _MB,
        }

    def close(self) -> None:
        pass


class NetworkSampler:
    """Bytes received and transmitted on all interfaces since the last sample.

    Args:
        io_counters: returns ``(bytes_received, bytes_sent)``; default psutil's.
    """

    def __init__(self, io_counters: Callable[[], tuple[int, int]] | None = None) -> None:
        if io_counters is None:
            import psutil

            def io_counters() -> tuple[int, int]:
                counters = psutil.net_io_counters(nowrap=True)
                return counters.bytes_recv, counters.bytes_sent

        self._io_counters = io_counters
        self._last = io_counters()

    def sample(self) -> dict[str, float]:
        now, last = self._io_counters(), self._last
        self._last = now
        # A counter that went backwards (an interface went away) counts as no traffic.
        return {
            "network_receive_megabytes": max(0, now[0] - last[0]) / _MB,
            "network_transmit_megabytes": max(0, now[1] - last[1]) / _MB,
        }

    def close(self) -> None:
        pass


# --- GPUs -------------------------------------------------------------------------------------


def nvidia_gpu_present() -> bool:
    """Whether an NVIDIA driver exposes a GPU here (no NVML needed)."""
    return any(os.path.exists(path) for path in NVIDIA_DEVICE_PATHS)


def _notice_missing_nvml() -> None:
    """Warn once per process when there is an NVIDIA GPU but no ``pynvml`` to read it."""
    global _nvml_notice_given
    if _nvml_notice_given:
        return
    if "pynvml" in sys.modules:
        missing = sys.modules["pynvml"] is None
    else:
        import importlib.util

        try:
            missing = importlib.util.find_spec("pynvml") is None
        except (ImportError, ValueError):
            missing = True
    if not missing or not nvidia_gpu_present():
        return
    with _nvml_notice_lock:
        if _nvml_notice_given:
            return
        _nvml_notice_given = True
    warnings.warn(
        "An NVIDIA GPU is present but NVIDIA's NVML binding is not installed, so no GPU "
        "metrics are logged; install it with: pip install 'mltrail[gpu]'",
        UserWarning,
        stacklevel=_user_stacklevel(),
    )


def _user_stacklevel() -> int:
    """The ``stacklevel`` of the first caller outside mltrail, seen from our caller."""
    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame = sys._getframe(2)  # the caller of the function that warns
    level = 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package_dir + os.sep):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


def visible_gpu_indices(cuda_visible_devices: str | None, uuids: Sequence[str]) -> list[int]:
    """Map ``CUDA_VISIBLE_DEVICES`` to NVML indices, in the order the process sees them.

    ``None`` (unset) means every GPU; an empty string means none. Entries are indices or GPU
    UUIDs, whole or as a unique prefix (``GPU-8932f937``). As CUDA does, the list ends at the
    first entry that names no GPU (``-1``, an unknown or ambiguous UUID, a repeat). MIG
    instances (``MIG-...``) are not mapped.

    Args:
        cuda_visible_devices: the variable's value, or ``None`` when unset.
        uuids: each GPU's UUID, by NVML index.
    """
    if cuda_visible_devices is None:
        return list(range(len(uuids)))
    indices: list[int] = []
    for raw in cuda_visible_devices.split(","):
        entry = raw.strip()
        index: int | None = None
        if entry.isdigit():
            index = int(entry) if int(entry) < len(uuids) else None
        elif entry.upper().startswith("GPU-"):
            matches = [i for i, uuid in enumerate(uuids) if uuid.lower().startswith(entry.lower())]
            index = matches[0] if len(matches) == 1 else None
        if index is None or index in indices:
            if entry:
                logger.debug("CUDA_VISIBLE_DEVICES entry %r names no GPU; ignoring the rest", entry)
            break
        indices.append(index)
    return indices


class GPUSampler:
    """Per-GPU utilisation, memory, power and temperature through NVML.

    Build it with :meth:`create`, which returns ``None`` where there is nothing to read.

    Args:
        nvml: the initialised ``pynvml`` module.
        handles: NVML device handles, in the process's CUDA order (position = ``<i>``).
    """

    def __init__(self, nvml: Any, handles: Sequence[Any]) -> None:
        self._nvml = nvml
        self._handles = list(handles)
        # (ordinal, metric) pairs the device said it does not support: not asked again.
        self._unsupported: set[tuple[int, str]] = set()

    @classmethod
    def create(cls) -> GPUSampler | None:
        """Initialise NVML for the GPUs this process may use; ``None`` if none or no NVML."""
        try:
            import pynvml
        except ImportError:
            return None
        try:
            pynvml.nvmlInit()
        except Exception:
            logger.debug("NVML is not available; no GPU metrics", exc_info=True)
            return None
        try:
            count = pynvml.nvmlDeviceGetCount()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            uuids = [_text(pynvml.nvmlDeviceGetUUID(handle)) for handle in handles]
            indices = visible_gpu_indices(os.environ.get("CUDA_VISIBLE_DEVICES"), uuids)
        except Exception:
            logger.debug("listing GPUs through NVML failed", exc_info=True)
            indices = []
        if not indices:
            _shutdown(pynvml)
            return None
        return cls(pynvml, [handles[i] for i in indices])

    def sample(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for ordinal, handle in enumerate(self._handles):
            for name, read in _GPU_READINGS:
                if (ordinal, name) in self._unsupported:
                    continue
                try:
                    values = read(self._nvml, handle)
                except Exception as exc:
                    # One GPU's failing reading leaves out only that reading.
                    not_supported = getattr(self._nvml, "NVML_ERROR_NOT_SUPPORTED", object())
                    if getattr(exc, "value", None) == not_supported:
                        self._unsupported.add((ordinal, name))
                    logger.debug("reading gpu_%d %s failed", ordinal, name, exc_info=True)
                    continue
                for key, value in values.items():
                    metrics[f"gpu_{ordinal}_{key}"] = value
        return metrics

    def close(self) -> None:
        _shutdown(self._nvml)


def _utilization(nvml: Any, handle: Any) -> dict[str, float]:
    return {"utilization_percentage": float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)}


def _memory(nvml: Any, handle: Any) -> dict[str, float]:
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    values = {"memory_usage_megabytes": memory.used / _MB}
    if memory.total:
        values["memory_usage_percentage"] = 100.0 * memory.used / memory.total
    return values


def _power(nvml: Any, handle: Any) -> dict[str, float]:
    return {"power_watts": nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0}  # milliwatts


def _temperature(nvml: Any, handle: Any) -> dict[str, float]:
    celsius = nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
    return {"temperature_celsius": float(celsius)}


_GPU_READINGS: tuple[tuple[str, Callable[[Any, Any], dict[str, float]]], ...] = (
    ("utilization", _utilization),
    ("memory", _memory),
    ("power", _power),
    ("temperature", _temperature),
)


def _text(value: str | bytes) -> str:
    # Older bindings return bytes.
    return value.decode() if isinstance(value, bytes) else value


def _shutdown(nvml: Any) -> None:
    try:
        nvml.nvmlShutdown()
    except Exception:
        logger.debug("nvmlShutdown failed", exc_info=True)
