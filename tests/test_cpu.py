"""webhook.cpu.run: the result or the error of the function, and, under gevent, others run meanwhile."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from webhook import cpu

ROOT = Path(__file__).resolve().parent.parent


def test_run_returns_what_the_function_returns():
    assert cpu.run(divmod, 17, 5) == (3, 2)
    assert cpu.run(sorted, [3, 1, 2], reverse=True) == [3, 2, 1]


def test_run_raises_what_the_function_raises():
    with pytest.raises(ZeroDivisionError):
        cpu.run(divmod, 1, 0)


# In a process of its own: gevent patches the whole interpreter.
_UNDER_GEVENT = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()
    import gevent
    from webhook import cpu

    ticks = []

    def ticker():
        while True:
            ticks.append(1)
            gevent.sleep(0.001)

    def compute():
        # Pure Python for a while; records how far the ticker had got when it began and ended.
        started = len(ticks)
        total = sum(i * i for i in range(3_000_000))
        return started, len(ticks), total

    greenlet = gevent.spawn(ticker)
    gevent.sleep(0.01)
    for name, call in (("inline", compute), ("run", lambda: cpu.run(compute))):
        started, ended, total = call()
        print(name, ended - started, total)
    greenlet.kill()
    print("ok", cpu.run(divmod, 17, 5))
    try:
        cpu.run(divmod, 1, 0)
    except ZeroDivisionError:
        print("raised", "yes")
""")


def test_under_gevent_other_greenlets_run_while_it_computes():
    result = subprocess.run([sys.executable, "-c", _UNDER_GEVENT], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    # The error reached the caller only: nothing printed a traceback on the way.
    assert "Traceback" not in result.stderr, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    inline, offloaded = int(lines["inline"].split()[0]), int(lines["run"].split()[0])
    assert inline == 0  # computed on the hub: nothing else ran
    assert offloaded > 0  # computed in a native thread: the ticker went on
    assert (lines["ok"], lines["raised"]) == ("(3, 2)", "yes")
