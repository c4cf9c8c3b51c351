"""specdec.cli.launcher: a service started with start_process exits with the process that started it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

PARENT = """
import sys, time
from specdec.cli.launcher import free_port, start_process
child = start_process([sys.executable, "-m", "specdec", "serve", "draft", "--host", "127.0.0.1",
                       "--port", str(free_port()), "--metrics-port", "0"], subprocess.DEVNULL)
print(child.pid, flush=True)
time.sleep(120)
"""


def test_a_service_dies_with_the_process_that_started_it():
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess\n" + PARENT], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    time.sleep(2)  # the service is past die_with_parent() by now
    os.kill(child, 0)  # alive while its parent is
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    raise AssertionError("the service outlived the process that started it")
