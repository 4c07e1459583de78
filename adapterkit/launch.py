"""`adapterkit launch`: `accelerate launch ... -m adapterkit.cli train` with what a run over several machines needs.

Every option of `accelerate launch` is accepted and passed on; this adds, before anything starts:
- the machine count, rank and process count checked against each other (one line each, not a hang);
- on machines other than 0, the rendezvous address waited for at most --timeout seconds, then one line;
and while it runs:
- the same timeout for the rendezvous (torchrun's static rendezvous) and for every collective of the workers,
  so a machine that vanished without closing its sockets stops the others instead of hanging;
- one line when this machine's process was killed; a process that failed says why itself (its own one line),
  so the launcher adds nothing to it (accelerate's launcher prints torch's failure table and a traceback).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time

from .errors import PeerStopped, RecipeError

# Read by training (training/distributed.py): how long a process waits for the others in a collective.
TIMEOUT_ENV = "ADAPTERKIT_DIST_TIMEOUT"

COMMANDS = ("train",)  # what runs under a launcher: a search or an export is one process


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """(accelerate launch options, the adapterkit command and its arguments)."""
    at = next((i for i, a in enumerate(argv) if a in COMMANDS), None)
    if at is None:
        raise RecipeError("launch: give `accelerate launch` options, then `train RECIPE [train options]`")
    return argv[:at], argv[at:]


def parse(options: list[str], command: list[str]):
    """accelerate's own parser, with its usage errors as one line."""
    from accelerate.commands.launch import launch_command_parser

    parser = launch_command_parser()

    def error(message: str):
        raise RecipeError(f"launch: {message}")

    parser.error = error
    return parser.parse_args([*options, "--module", "adapterkit.cli", *command])


def _settings(args) -> dict:
    """Machines, this machine's rank, processes in all and the rendezvous address: the options, else the config."""
    from accelerate.commands.config.config_args import default_config_file, load_config_from_file

    path = args.config_file or (default_config_file if os.path.isfile(default_config_file) else None)
    cfg = load_config_from_file(path) if path else None

    def pick(name: str, default):
        value = getattr(args, name, None)
        return value if value is not None else getattr(cfg, name, default) if cfg is not None else default

    return dict(
        machines=int(pick("num_machines", 1)),
        rank=int(pick("machine_rank", 0)),
        processes=int(pick("num_processes", 1)),
        ip=pick("main_process_ip", None),
        port=int(pick("main_process_port", None) or 29500),
    )


def check(args) -> dict:
    """The counts and the rendezvous address make sense together; one line naming the option otherwise."""
    s = _settings(args)
    machines, rank, processes = s["machines"], s["rank"], s["processes"]
    if machines < 1:
        raise RecipeError(f"--num_machines {machines}: expected 1 or more")
    if not 0 <= rank < machines:
        raise RecipeError(f"--machine_rank {rank}: expected 0 to {machines - 1} (--num_machines {machines})")
    if processes < machines or processes % machines:
        raise RecipeError(
            f"--num_processes {processes}: the processes on all machines together, a multiple of "
            f"--num_machines {machines} (each machine starts {max(1, processes // machines)})"
        )
    if machines > 1 and not s["ip"]:
        raise RecipeError(f"--main_process_ip: needed with --num_machines {machines} (machine 0's address)")
    return s


def wait_for_rendezvous(ip: str, port: int, timeout: float) -> None:
    """Machines other than 0: machine 0 may start later, so try until the timeout, then say so in one line."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((ip, port), timeout=min(5.0, timeout)):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise RecipeError(
                    f"--main_process_ip {ip} --main_process_port {port}: machine 0 did not answer within "
                    f"{timeout:g} s ({e.strerror or e}); start it there, or check the address from this machine"
                ) from None
            time.sleep(0.5)


def launch(argv: list[str], timeout: float) -> None:
    """Check, then run `accelerate launch OPTIONS -m adapterkit.cli COMMAND...` in this process."""
    # The launcher's own library warnings (bitsandbytes' kernel probe, the elastic agent's failure table) stay off
    # the terminal: its workers capture theirs into the run's log, and failures are one line below.
    for name in ("kernels", "bitsandbytes", "accelerate"):  # accelerate: its notes on defaults it filled in
        logging.getLogger(name).setLevel(logging.ERROR)
    from accelerate.commands.launch import launch_command
    from accelerate.utils import patch_environment
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)

    options, command = split_argv(argv)
    args = parse(options, command)
    s = check(args)
    if s["machines"] > 1 and s["rank"] > 0:
        wait_for_rendezvous(s["ip"], s["port"], timeout)
    extra = f"timeout={int(timeout)}"
    args.rdzv_conf = f"{args.rdzv_conf},{extra}" if getattr(args, "rdzv_conf", None) else extra
    try:
        with patch_environment(**{TIMEOUT_ENV: str(timeout)}):  # the workers inherit it
            launch_command(args)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        if failure.exitcode >= 0:  # the process said why, in its own line
            raise SystemExit(failure.exitcode or 1) from None
        raise PeerStopped(
            f"process {rank} on this machine was stopped by {failure.signal_name()}; start every machine again "
            f"with the same command and --resume"
        ) from None
    except subprocess.CalledProcessError as e:  # a one-process launch
        if e.returncode < 0:  # killed by a signal: it could not say why
            raise PeerStopped(f"the process was stopped by {signal.Signals(-e.returncode).name}") from None
        raise SystemExit(e.returncode) from None  # it said why, in its own line
    except Exception as e:  # the rendezvous (torchrun's agent): machines missing, the address taken
        if not _rendezvous_error(e):
            raise
        first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise RecipeError(
            f"--main_process_ip {s['ip'] or '127.0.0.1'} --main_process_port {s['port']}: the rendezvous of "
            f"{s['machines']} machine(s) failed ({first}; --timeout {timeout:g} s)"
        ) from None


def _rendezvous_error(e: BaseException) -> bool:
    """The store or rendezvous failed (torch's own types), not a bug elsewhere in the launcher."""
    import torch.distributed as dist
    from torch.distributed.elastic.rendezvous import RendezvousError

    return isinstance(e, (dist.DistError, RendezvousError, TimeoutError))
