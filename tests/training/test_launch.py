"""`adapterkit launch`: counts that do not fit together, a rendezvous nobody answers and a machine that never joins
end in one line naming the option, within the timeout (never a hang). The runs themselves: test_distributed.py."""
from __future__ import annotations

import os
import socket
import time

import pytest

from helpers import ROOT, one_error_line

CPU = ["--config_file", str(ROOT / "recipes/accelerate/cpu-multiprocess.yaml")]


def _closed_port() -> int:
    with socket.socket() as s:  # bound, then released: nothing listens there
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("options, expected", [
    (["--num_machines", "2", "--machine_rank", "2", "--num_processes", "2", "--main_process_ip", "127.0.0.1"],
     "--machine_rank 2: expected 0 to 1 (--num_machines 2)"),
    (["--num_machines", "2", "--machine_rank", "-1", "--num_processes", "2", "--main_process_ip", "127.0.0.1"],
     "--machine_rank -1: expected 0 to 1"),
    (["--num_machines", "2", "--machine_rank", "0", "--num_processes", "3", "--main_process_ip", "127.0.0.1"],
     "--num_processes 3: the processes on all machines together, a multiple of --num_machines 2"),
    (["--num_machines", "2", "--machine_rank", "1", "--num_processes", "2"], "--main_process_ip: needed with"),
    (["--num_machines", "0"], "--num_machines 0: expected 1 or more"),
    (["--no_such_option", "1"], "launch: unrecognized arguments: --no_such_option"),
])
def test_counts_that_do_not_fit_are_one_line(options, expected):
    assert expected in one_error_line(["launch", *CPU, *options, "train", "recipe.yaml"])


def test_the_command_and_the_timeout_are_checked():
    assert "then `train RECIPE" in one_error_line(["launch", *CPU, "--num_processes", "2"])
    assert "--timeout 0.0: expected seconds from 1 to 86400" in one_error_line(["launch", "--timeout", "0", "train", "r.yaml"])


def test_an_unreachable_rendezvous_is_one_line_within_the_timeout():
    port = _closed_port()
    t0 = time.monotonic()
    line = one_error_line(["launch", "--timeout", "2", *CPU, "--num_machines", "2", "--machine_rank", "1",
                           "--num_processes", "2", "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
                           "train", "recipe.yaml"])
    assert time.monotonic() - t0 < 15
    assert f"--main_process_ip 127.0.0.1 --main_process_port {port}: machine 0 did not answer within 2 s" in line


def test_machine_zero_waiting_for_a_machine_that_never_joins_stops_at_the_timeout(tmp_path):
    """Machine 0 hosts the rendezvous: with machine 1 never started (or launched with another --num_machines, whose
    world never forms), it stops at the timeout, in one line, and leaves nothing set in this process."""
    t0 = time.monotonic()
    line = one_error_line(["launch", "--timeout", "2", *CPU, "--num_machines", "2", "--machine_rank", "0",
                           "--num_processes", "2", "--main_process_ip", "127.0.0.1", "--main_process_port",
                           str(_closed_port()), "train", str(tmp_path / "recipe.yaml")])
    assert time.monotonic() - t0 < 30
    assert "the rendezvous of 2 machine(s) failed (" in line and "1/2 clients joined" in line and "--timeout 2 s" in line
    assert "ADAPTERKIT_DIST_TIMEOUT" not in os.environ
