"""A fake ``pynvml`` module, to put in ``sys.modules`` where a test needs GPUs on a CPU machine.

It has the names and shapes of nvidia-ml-py that mltrail uses: ``nvmlInit``/``nvmlShutdown``,
device count, handles by index, UUIDs, utilisation, memory, power (milliwatts), temperature,
``NVMLError`` carrying ``.value``, and the constants.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any

NVML_TEMPERATURE_GPU = 0
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_UNKNOWN = 999
NVML_ERROR_LIBRARY_NOT_FOUND = 12


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


@dataclass
class FakeGPU:
    uuid: str
    utilization: int = 50
    memory_used: int = 4_000_000_000
    memory_total: int = 16_000_000_000
    power_milliwatts: int = 150_000
    temperature: int = 60
    #: NVML function name -> error code it raises for this GPU.
    failures: dict[str, int] = field(default_factory=dict)


@dataclass
class FakeNVML:
    gpus: list[FakeGPU]
    init_error: int | None = None
    calls: list[str] = field(default_factory=list)
    initialised: int = 0

    def module(self) -> types.ModuleType:
        """Build the module object to install as ``sys.modules['pynvml']``."""
        mod = types.ModuleType("pynvml")
        mod.NVML_TEMPERATURE_GPU = NVML_TEMPERATURE_GPU  # type: ignore[attr-defined]
        mod.NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED  # type: ignore[attr-defined]
        mod.NVMLError = NVMLError  # type: ignore[attr-defined]
        for name in dir(self):
            if name.startswith("nvml"):
                setattr(mod, name, getattr(self, name))
        return mod

    def _gpu(self, handle: Any, function: str) -> FakeGPU:
        self.calls.append(function)
        if self.initialised <= 0:
            raise NVMLError(1)  # NVML_ERROR_UNINITIALIZED
        gpu: FakeGPU = handle
        if function in gpu.failures:
            raise NVMLError(gpu.failures[function])
        return gpu

    def nvmlInit(self) -> None:
        self.calls.append("nvmlInit")
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self.calls.append("nvmlShutdown")
        self.initialised -= 1

    def nvmlDeviceGetCount(self) -> int:
        self.calls.append("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGPU:
        self.calls.append("nvmlDeviceGetHandleByIndex")
        return self.gpus[index]

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        return self._gpu(handle, "nvmlDeviceGetUUID").uuid

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> types.SimpleNamespace:
        gpu = self._gpu(handle, "nvmlDeviceGetUtilizationRates")
        return types.SimpleNamespace(gpu=gpu.utilization, memory=10)

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> types.SimpleNamespace:
        gpu = self._gpu(handle, "nvmlDeviceGetMemoryInfo")
        return types.SimpleNamespace(
            total=gpu.memory_total, used=gpu.memory_used, free=gpu.memory_total - gpu.memory_used
        )

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        return self._gpu(handle, "nvmlDeviceGetPowerUsage").power_milliwatts

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        assert sensor == NVML_TEMPERATURE_GPU
        return self._gpu(handle, "nvmlDeviceGetTemperature").temperature


def two_gpus() -> FakeNVML:
    """Two GPUs with different readings, so a test can tell which one was read."""
    return FakeNVML(
        gpus=[
            FakeGPU(
                uuid="GPU-aaaa1111-0000-0000-0000-000000000000",
                utilization=10,
                memory_used=1_000_000_000,
                memory_total=10_000_000_000,
                power_milliwatts=100_000,
                temperature=40,
            ),
            FakeGPU(
                uuid="GPU-bbbb2222-0000-0000-0000-000000000000",
                utilization=90,
                memory_used=6_000_000_000,
                memory_total=8_000_000_000,
                power_milliwatts=250_500,
                temperature=75,
            ),
        ]
    )
