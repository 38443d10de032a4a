"""The afnet command pins glibc's allocator thresholds (its own process); the library never does.

Measured by what they are for: with the thresholds pinned, a repeated CPU forward takes no
fresh-page faults, where glibc's defaults fault its large activations in again every time."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import resource, sys, torch
    torch.set_num_threads(1)
    if sys.argv[1] == "pinned":
        from afnet.tools.allocator import malloc_tuned, pin_malloc_thresholds
        assert pin_malloc_thresholds() and malloc_tuned()
    import afnet
    model = afnet.freeze(afnet.create_model("af_resnet50", num_classes=5, num_segments=8, policy="uniform", rt=0.5).eval())
    video = torch.randn(1, 8, 3, 224, 224)
    with torch.inference_mode():
        for _ in range(3):
            model(video)
        # The fewest faults of four forwards: the pinned heap may still grow once after the warm-up
        # (a new high-water mark), where glibc's defaults fault the activations in on every one.
        faults = []
        for _ in range(4):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            model(video)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        print(min(faults))
    """
)


def faults_per_forward(mode: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_pinned_thresholds_stop_the_page_faults() -> None:
    default, pinned = faults_per_forward("default"), faults_per_forward("pinned")
    assert default > 500, default  # the library alone leaves glibc's defaults: faults every forward
    assert pinned < 50, pinned


def test_the_command_pins_and_can_be_told_not_to(monkeypatch) -> None:
    from afnet import cli
    from afnet.tools import allocator

    calls = []
    monkeypatch.setattr(allocator, "pin_malloc_thresholds", lambda: calls.append(1) or True)
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    monkeypatch.setenv("AFNET_MALLOC_TUNING", "0")
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert calls == [1]
