from __future__ import annotations

import importlib.util
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import psutil
import pytest

from mltrail.core import system_metrics as sm
from mltrail.core.errors import InvalidValueError


def _load_fake_pynvml() -> ModuleType:
    # Loaded by path so the helper works whatever pytest's import mode.
    spec = importlib.util.spec_from_file_location(
        "mltrail_tests_fake_pynvml", Path(__file__).with_name("fake_pynvml.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


fake_pynvml = _load_fake_pynvml()


@pytest.fixture(autouse=True)
def _no_real_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """By default: no pynvml and no NVIDIA device, whatever the machine has."""
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    monkeypatch.setattr(sm, "NVIDIA_DEVICE_PATHS", (str(tmp_path / "no-nvidia"),))
    monkeypatch.setattr(sm, "_nvml_notice_given", False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv(sm.INTERVAL_ENV, raising=False)
    monkeypatch.delenv(sm.ENABLE_ENV, raising=False)


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    nvml = fake_pynvml.two_gpus()
    monkeypatch.setitem(sys.modules, "pynvml", nvml.module())
    yield nvml


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, float], int]] = []
        self.lock = threading.Lock()

    def __call__(self, metrics: dict[str, float], step: int) -> None:
        with self.lock:
            self.calls.append((dict(metrics), step))

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.calls) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.calls) >= count, f"only {len(self.calls)} samples arrived"


class ConstantSampler:
    def __init__(self, **values: float) -> None:
        self.values = values
        self.closed = False

    def sample(self) -> dict[str, float]:
        return dict(self.values)

    def close(self) -> None:
        self.closed = True


class FailingSampler(ConstantSampler):
    def sample(self) -> dict[str, float]:
        raise RuntimeError("sensor on fire")


def _wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert condition()


# --- configuration ----------------------------------------------------------------------------


def test_interval_defaults_to_ten_seconds() -> None:
    assert sm.resolve_interval(None) == 10.0


def test_interval_argument_wins_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sm.INTERVAL_ENV, "2.5")
    assert sm.resolve_interval(None) == 2.5
    assert sm.resolve_interval(0.5) == 0.5


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), True, "abc"])
def test_bad_interval_is_rejected(bad: object) -> None:
    with pytest.raises(InvalidValueError, match="greater than 0"):
        sm.resolve_interval(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["0", "-3", "ten"])
def test_bad_interval_in_env_names_the_variable(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv(sm.INTERVAL_ENV, bad)
    with pytest.raises(InvalidValueError, match=sm.INTERVAL_ENV):
        sm.SystemMetricsMonitor(lambda m, s: None)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, False),
        ("", False),
        ("false", False),
        ("0", False),
        ("true", True),
        ("TRUE", True),
        ("1", True),
        (" yes ", True),
        ("on", True),
    ],
)
def test_enabled_by_env(monkeypatch: pytest.MonkeyPatch, raw: str | None, expected: bool) -> None:
    if raw is not None:
        monkeypatch.setenv(sm.ENABLE_ENV, raw)
    assert sm.system_metrics_enabled_by_env() is expected


def test_enabled_by_env_rejects_nonsense(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sm.ENABLE_ENV, "maybe")
    with pytest.raises(InvalidValueError, match="maybe"):
        sm.system_metrics_enabled_by_env()


# --- the monitor --------------------------------------------------------------------------------


def test_monitor_logs_host_metrics_with_real_psutil() -> None:
    recorder = Recorder()
    monitor = sm.SystemMetricsMonitor(recorder, interval=0.05)
    monitor.start()
    try:
        recorder.wait_for(3)
        assert any(t.name == "mltrail-system-metrics" and t.daemon for t in threading.enumerate())
    finally:
        monitor.stop()

    assert [step for _, step in recorder.calls] == list(range(len(recorder.calls)))
    metrics = recorder.calls[-1][0]
    assert {
        "system/cpu_utilization_percentage",
        "system/system_memory_usage_megabytes",
        "system/system_memory_usage_percentage",
        "system/process_rss_megabytes",
        "system/disk_usage_percentage",
        "system/network_receive_megabytes",
        "system/network_transmit_megabytes",
    } <= metrics.keys()
    assert not any(key.startswith("system/gpu_") for key in metrics)
    assert 0.0 <= metrics["system/cpu_utilization_percentage"] <= 100.0
    assert 0.0 < metrics["system/system_memory_usage_percentage"] <= 100.0
    total_mb = psutil.virtual_memory().total / 1e6
    assert 0.0 < metrics["system/system_memory_usage_megabytes"] <= total_mb
    rss_mb = psutil.Process().memory_info().rss / 1e6
    assert 0.5 * rss_mb < metrics["system/process_rss_megabytes"] < 2 * rss_mb
    assert 0.0 <= metrics["system/disk_usage_percentage"] <= 100.0
    assert metrics["system/network_receive_megabytes"] >= 0.0
    assert all(isinstance(v, float) for v in metrics.values())


def test_stop_is_prompt_and_joins_the_thread() -> None:
    # An hour's interval: only Event.wait (not sleep) lets the thread end within stop()'s join.
    monitor = sm.SystemMetricsMonitor(lambda m, s: None, interval=3600, samplers=[])
    monitor.start()
    assert monitor.running
    monitor.stop()
    assert not monitor.running
    assert not any(t.name == sm.THREAD_NAME for t in threading.enumerate())


def test_nothing_is_logged_after_stop_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sm, "_JOIN_TIMEOUT", 0.05)
    entered, release = threading.Event(), threading.Event()

    class BlockingSampler(ConstantSampler):
        def sample(self) -> dict[str, float]:
            entered.set()
            release.wait(10)
            return {"x": 1.0}

    recorder = Recorder()
    sampler = BlockingSampler()
    monitor = sm.SystemMetricsMonitor(recorder, interval=0.01, samplers=[sampler])
    monitor.start()
    assert entered.wait(10)
    monitor.stop()  # the thread is still inside sample()
    release.set()
    _wait_until(lambda: not monitor.running)
    assert recorder.calls == []
    assert sampler.closed


def test_samples_stop_arriving_after_stop() -> None:
    recorder = Recorder()
    monitor = sm.SystemMetricsMonitor(recorder, interval=0.01, samplers=[ConstantSampler(x=1.0)])
    monitor.start()
    recorder.wait_for(2)
    monitor.stop()
    count = len(recorder.calls)
    time.sleep(0.1)  # ten intervals
    assert len(recorder.calls) == count


def test_a_failing_sampler_or_logger_does_not_stop_sampling() -> None:
    recorder = Recorder()
    failures = []

    def log_metrics(metrics: dict[str, float], step: int) -> None:
        if step == 0 and not failures:
            failures.append(step)
            raise RuntimeError("store unreachable")
        recorder(metrics, step)

    good, bad = ConstantSampler(load=3.0), FailingSampler()
    monitor = sm.SystemMetricsMonitor(log_metrics, interval=0.01, samplers=[bad, good])
    monitor.start()
    try:
        recorder.wait_for(2)
    finally:
        monitor.stop()
    assert failures == [0]
    assert recorder.calls[0] == ({"system/load": 3.0}, 1)
    assert good.closed and bad.closed


def test_start_twice_starts_one_thread() -> None:
    monitor = sm.SystemMetricsMonitor(lambda m, s: None, interval=3600, samplers=[])
    monitor.start()
    monitor.start()
    try:
        assert sum(t.name == sm.THREAD_NAME for t in threading.enumerate()) == 1
    finally:
        monitor.stop()


def test_stop_before_start_and_twice_is_harmless() -> None:
    monitor = sm.SystemMetricsMonitor(lambda m, s: None, samplers=[])
    monitor.stop()
    monitor.start()  # a stopped monitor does not start
    monitor.stop()
    assert not monitor.running


# --- host samplers --------------------------------------------------------------------------


def test_cpu_sampler_reads_a_percentage() -> None:
    sampler = sm.CPUSampler()
    end = time.process_time() + 0.05
    while time.process_time() < end:  # some work, so the interval is not empty
        pass
    value = sampler.sample()["cpu_utilization_percentage"]
    assert 0.0 < value <= 100.0


def test_network_is_a_per_interval_delta_over_real_loopback_traffic() -> None:
    sampler = sm.NetworkSampler()
    counters = psutil.net_io_counters()
    first = sampler.sample()
    # The first sample covers only the time since the baseline, not the counters since boot.
    assert first["network_receive_megabytes"] <= counters.bytes_recv / 1e6

    payload = b"x" * 5_000_000
    with socket.create_server(("127.0.0.1", 0)) as server:
        received = bytearray()

        def receive() -> None:
            conn, _ = server.accept()
            with conn:
                while chunk := conn.recv(1 << 20):
                    received.extend(chunk)

        reader = threading.Thread(target=receive)
        reader.start()
        with socket.create_connection(server.getsockname()) as client:
            client.sendall(payload)
        reader.join(10)
    assert len(received) == len(payload)

    during = sampler.sample()
    assert during["network_receive_megabytes"] >= 5.0
    assert during["network_transmit_megabytes"] >= 5.0
    after = sampler.sample()  # no traffic of ours since: a delta, not an ever-growing counter
    assert after["network_receive_megabytes"] < 5.0
    assert after["network_transmit_megabytes"] < 5.0


def test_network_counter_going_backwards_counts_as_zero() -> None:
    readings = iter([(10_000_000, 0), (13_000_000, 2_000_000), (1_000_000, 2_500_000)])
    sampler = sm.NetworkSampler(io_counters=lambda: next(readings))
    assert sampler.sample() == {"network_receive_megabytes": 3.0, "network_transmit_megabytes": 2.0}
    assert sampler.sample() == {"network_receive_megabytes": 0.0, "network_transmit_megabytes": 0.5}


def test_disk_sampler_usage_and_io_deltas(tmp_path: Path) -> None:
    readings = iter([(100_000_000, 50_000_000), (103_000_000, 50_000_000), (103_000_000, 52_000_000)])
    sampler = sm.DiskSampler(str(tmp_path), io_counters=lambda: next(readings))
    first = sampler.sample()
    assert first["disk_read_megabytes"] == 3.0
    assert first["disk_write_megabytes"] == 0.0
    assert first["disk_usage_percentage"] == pytest.approx(psutil.disk_usage(str(tmp_path)).percent, abs=1.0)
    second = sampler.sample()
    assert (second["disk_read_megabytes"], second["disk_write_megabytes"]) == (0.0, 2.0)


def test_disk_io_left_out_where_the_os_reports_none(tmp_path: Path) -> None:
    sampler = sm.DiskSampler(str(tmp_path), io_counters=lambda: None)
    assert set(sampler.sample()) == {"disk_usage_percentage"}


def test_disk_usage_failure_leaves_out_only_that_value(tmp_path: Path) -> None:
    readings = iter([(0, 0), (1_000_000, 0)])
    sampler = sm.DiskSampler(str(tmp_path / "gone"), io_counters=lambda: next(readings))
    assert sampler.sample() == {"disk_read_megabytes": 1.0, "disk_write_megabytes": 0.0}


# --- GPUs through a fake pynvml -------------------------------------------------------------------


GPU0 = {
    "gpu_0_utilization_percentage": 10.0,
    "gpu_0_memory_usage_megabytes": 1000.0,
    "gpu_0_memory_usage_percentage": 10.0,
    "gpu_0_power_watts": 100.0,
    "gpu_0_temperature_celsius": 40.0,
}
GPU1 = {
    "gpu_1_utilization_percentage": 90.0,
    "gpu_1_memory_usage_megabytes": 6000.0,
    "gpu_1_memory_usage_percentage": 75.0,
    "gpu_1_power_watts": 250.5,
    "gpu_1_temperature_celsius": 75.0,
}
# Physical GPU 1 seen as the process's only GPU, cuda:0.
GPU1_AS_0 = {key.replace("gpu_1_", "gpu_0_"): value for key, value in GPU1.items()}


def test_all_gpus_when_cuda_visible_devices_is_unset(fake_nvml: object) -> None:
    sampler = sm.GPUSampler.create()
    assert sampler is not None
    assert sampler.sample() == {**GPU0, **GPU1}
    sampler.close()
    assert fake_nvml.initialised == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "visible",
    ["1", "GPU-bbbb2222-0000-0000-0000-000000000000", "GPU-bbbb", "gpu-BBBB2222", "1,7,0", " 1 "],
)
def test_only_the_visible_gpu(fake_nvml: object, monkeypatch: pytest.MonkeyPatch, visible: str) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    sampler = sm.GPUSampler.create()
    assert sampler is not None
    assert sampler.sample() == GPU1_AS_0


def test_visible_order_is_the_cuda_order(fake_nvml: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbbb,GPU-aaaa")
    sampler = sm.GPUSampler.create()
    assert sampler is not None
    metrics = sampler.sample()
    assert metrics["gpu_0_utilization_percentage"] == 90.0
    assert metrics["gpu_1_utilization_percentage"] == 10.0


@pytest.mark.parametrize("visible", ["", "-1", "2", "GPU-", "GPU-cccc", "NoDevFiles"])
def test_no_visible_gpu_means_no_gpu_sampler(
    fake_nvml: object, monkeypatch: pytest.MonkeyPatch, visible: str
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert sm.GPUSampler.create() is None
    assert fake_nvml.initialised == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("visible", "expected"),
    [
        (None, [0, 1, 2]),
        ("", []),
        ("2,0", [2, 0]),
        ("0,0,1", [0]),
        ("0,-1,1", [0]),
        ("GPU-a1", [1]),
        ("GPU-a", []),
        ("MIG-GPU-a1/1/0", []),
        ("1,,2", [1]),
    ],
)
def test_visible_gpu_indices(visible: str | None, expected: list[int]) -> None:
    uuids = ["GPU-b0", "GPU-a1", "GPU-a2"]
    assert sm.visible_gpu_indices(visible, uuids) == expected


def test_nvml_error_on_one_gpu_skips_only_that_value(fake_nvml: object) -> None:
    fake_nvml.gpus[1].failures["nvmlDeviceGetPowerUsage"] = fake_pynvml.NVML_ERROR_UNKNOWN  # type: ignore[attr-defined]
    sampler = sm.GPUSampler.create()
    assert sampler is not None
    expected = {**GPU0, **GPU1}
    del expected["gpu_1_power_watts"]
    assert sampler.sample() == expected
    # A transient error is tried again; the value comes back when the GPU answers.
    del fake_nvml.gpus[1].failures["nvmlDeviceGetPowerUsage"]  # type: ignore[attr-defined]
    assert sampler.sample() == {**GPU0, **GPU1}


def test_unsupported_reading_is_not_asked_again(fake_nvml: object) -> None:
    fake_nvml.gpus[0].failures["nvmlDeviceGetTemperature"] = fake_pynvml.NVML_ERROR_NOT_SUPPORTED  # type: ignore[attr-defined]
    sampler = sm.GPUSampler.create()
    assert sampler is not None
    for _ in range(3):
        metrics = sampler.sample()
        assert "gpu_0_temperature_celsius" not in metrics
        assert metrics["gpu_1_temperature_celsius"] == 75.0
    assert fake_nvml.calls.count("nvmlDeviceGetTemperature") == 1 + 3  # type: ignore[attr-defined]


def test_nvml_that_fails_to_initialise_is_quiet(fake_nvml: object) -> None:
    fake_nvml.init_error = fake_pynvml.NVML_ERROR_LIBRARY_NOT_FOUND  # type: ignore[attr-defined]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sm.GPUSampler.create() is None


def test_monitor_logs_gpu_metrics_under_system(fake_nvml: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    recorder = Recorder()
    monitor = sm.SystemMetricsMonitor(recorder, interval=0.02)
    monitor.start()
    try:
        recorder.wait_for(1)
    finally:
        monitor.stop()
    metrics = recorder.calls[0][0]
    assert {k: v for k, v in metrics.items() if "gpu" in k} == {
        f"system/{key}": value for key, value in GPU1_AS_0.items()
    }
    assert "system/cpu_utilization_percentage" in metrics
    assert fake_nvml.initialised == 0  # type: ignore[attr-defined]  # shut down by the thread


# --- the notice for an NVIDIA GPU without the NVML binding ----------------------------------


def test_no_nvidia_gpu_no_binding_is_silent() -> None:
    recorder = Recorder()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        monitor = sm.SystemMetricsMonitor(recorder, interval=0.02)
        monitor.start()
        try:
            recorder.wait_for(1)
        finally:
            monitor.stop()
    assert not any("gpu" in key for key, _ in recorder.calls[0][0].items())


def test_nvidia_gpu_without_binding_warns_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    device = tmp_path / "nvidia0"
    device.touch()
    monkeypatch.setattr(sm, "NVIDIA_DEVICE_PATHS", (str(tmp_path / "absent"), str(device)))
    with pytest.warns(UserWarning, match=r"pip install 'mltrail\[gpu\]'") as record:
        for _ in range(2):
            monitor = sm.SystemMetricsMonitor(lambda m, s: None, interval=3600)
            monitor.start()
            monitor.stop()
    assert len(record) == 1
    assert record[0].filename == __file__  # points at the caller of start()


def test_no_notice_when_the_binding_is_installed(
    fake_nvml: object, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    device = tmp_path / "nvidia0"
    device.touch()
    monkeypatch.setattr(sm, "NVIDIA_DEVICE_PATHS", (str(device),))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        monitor = sm.SystemMetricsMonitor(lambda m, s: None, interval=3600)
        monitor.start()
        monitor.stop()


# --- the real NVML -----------------------------------------------------------------------------


@pytest.fixture
def real_nvml(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.delitem(sys.modules, "pynvml")
    pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        pytest.skip(f"no NVIDIA GPU here: {exc}")
    count = pynvml.nvmlDeviceGetCount()
    pynvml.nvmlShutdown()
    if count == 0:
        pytest.skip("NVML sees no GPU")
    return pynvml


@pytest.mark.gpu
def test_real_nvml_reads_every_visible_gpu(real_nvml: ModuleType) -> None:
    real_nvml.nvmlInit()
    count = real_nvml.nvmlDeviceGetCount()
    real_nvml.nvmlShutdown()
    sampler = sm.GPUSampler.create()
    assert sampler is not None
    try:
        metrics = sampler.sample()
    finally:
        sampler.close()
    for i in range(count):
        assert 0.0 <= metrics[f"gpu_{i}_utilization_percentage"] <= 100.0
        assert 0.0 < metrics[f"gpu_{i}_memory_usage_megabytes"]
        assert 0.0 < metrics[f"gpu_{i}_memory_usage_percentage"] <= 100.0
        assert 0.0 < metrics[f"gpu_{i}_temperature_celsius"] < 120.0
        if f"gpu_{i}_power_watts" in metrics:  # not every board reports power
            assert 0.0 < metrics[f"gpu_{i}_power_watts"] < 2000.0
    assert not any(key.startswith(f"gpu_{count}_") for key in metrics)


@pytest.mark.gpu
def test_real_nvml_honours_a_uuid_in_cuda_visible_devices(
    real_nvml: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_nvml.nvmlInit()
    handle = real_nvml.nvmlDeviceGetHandleByIndex(real_nvml.nvmlDeviceGetCount() - 1)
    uuid = real_nvml.nvmlDeviceGetUUID(handle)
    uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
    expected_total = real_nvml.nvmlDeviceGetMemoryInfo(handle).total
    real_nvml.nvmlShutdown()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", uuid[:12])
    sampler = sm.GPUSampler.create()
    assert sampler is not None
    try:
        metrics = sampler.sample()
    finally:
        sampler.close()
    assert {key.split("_")[1] for key in metrics} == {"0"}
    used = metrics["gpu_0_memory_usage_megabytes"] * 1e6
    assert metrics["gpu_0_memory_usage_percentage"] == pytest.approx(100 * used / expected_total)
