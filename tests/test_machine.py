"""bst.machine: the CPU, its vector extensions and TensorFlow's threads, said with figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from bst import machine


def test_cpu_names_the_model_cores_and_extensions(monkeypatch, tmp_path):
    fake = tmp_path / "cpuinfo"
    fake.write_text(
        "processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse avx2 avx512f "
        "avx512_bf16\n\nprocessor\t: 1\nmodel name\t: Test CPU 9000\nflags\t\t: fpu\n"
    )
    real = machine.Path

    monkeypatch.setattr(machine, "Path", lambda p: fake if p == "/proc/cpuinfo" else real(p))
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    info = machine.cpu()
    assert info["model"] == "Test CPU 9000"
    assert info["extensions"] == ["AVX2", "AVX512", "AVX512-BF16"]  # no AMX flag
    assert info["logical_cpus"] >= 1
    text = machine.line(
        {**info, "tensorflow": "2.21.0", "intra_op_threads": 1, "inter_op_threads": 0}
    )
    assert text.startswith("Test CPU 9000, ") and "AVX2, AVX512, AVX512-BF16" in text
    assert text.endswith("TensorFlow 2.21.0, threads intra-op 1, inter-op default")


def test_a_cpu_without_the_extensions_says_so(monkeypatch, tmp_path):
    fake = tmp_path / "cpuinfo"
    fake.write_text("model name\t: Old CPU\nflags\t\t: fpu sse2\n")
    monkeypatch.setattr(machine, "Path", lambda p: fake)
    info = machine.cpu()
    assert info["extensions"] == [] and "no AVX2/AVX512/AMX" in machine.line(info)


def test_onednn_isa_cap_lists_only_the_extensions_in_use(monkeypatch, tmp_path):
    """ONEDNN_MAX_CPU_ISA=AVX2 on an AVX512-BF16 CPU: what an AVX2-only CPU would use,
    said in the line, and bfloat16 logits are not fast there."""
    from bst import devices

    fake = tmp_path / "cpuinfo"
    fake.write_text("model name\t: Test CPU\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16\n")
    monkeypatch.setattr(machine, "Path", lambda p: fake)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert machine.cpu()["extensions"] == ["AVX2", "AVX512", "AVX512-BF16", "AMX"]
    assert devices.cpu_has_fast_bf16()
    for cap, expected in (
        ("avx2", ["AVX2"]),
        ("AVX512_CORE", ["AVX2", "AVX512"]),
        ("AVX512_CORE_BF16", ["AVX2", "AVX512", "AVX512-BF16"]),
        ("ALL", ["AVX2", "AVX512", "AVX512-BF16", "AMX"]),
    ):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
        info = machine.cpu()
        assert info["extensions"] == expected, cap
        assert info["onednn_max_isa"] == cap.upper()
        assert f"(ONEDNN_MAX_CPU_ISA={cap.upper()})" in machine.line(info)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not devices.cpu_has_fast_bf16()


def test_peak_memory_is_this_processes_in_gib():
    """The peak resident memory Linux reports for this process (VmHWM), in GiB."""
    status = Path("/proc/self/status")
    if not status.is_file():
        pytest.skip("no /proc/self/status here")
    peak = machine.peak_memory_gib()
    for line in status.read_text().splitlines():
        if line.startswith("VmHWM:"):
            kib = int(line.split()[1])
    assert peak == pytest.approx(kib / 2**20, abs=0.02)
