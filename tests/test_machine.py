"""bst.machine: the CPU, its vector extensions and TensorFlow's threads, said with figures."""

from __future__ import annotations

from bst import machine


def test_cpu_names_the_model_cores_and_extensions(monkeypatch, tmp_path):
    fake = tmp_path / "cpuinfo"
    fake.write_text(
        "processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse avx2 avx512f "
        "avx512_bf16\n\nprocessor\t: 1\nmodel name\t: Test CPU 9000\nflags\t\t: fpu\n"
    )
    real = machine.Path

    monkeypatch.setattr(machine, "Path", lambda p: fake if p == "/proc/cpuinfo" else real(p))
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
