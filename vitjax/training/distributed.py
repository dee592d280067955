"""Joining a multi-host run (``jax.distributed``): the command-line flags and the start-up that
``python -m vitjax.train`` and the scaling sweep (``experiments/scaling/sweep.py``) share.

On Cloud TPU pods, SLURM (``srun``) and Kubernetes, ``--distributed`` alone is enough: jax detects
the coordinator, the process count and this process's id from the environment. Elsewhere give
``--coordinator_address``, ``--num_processes`` and ``--process_id``.
"""
from __future__ import annotations

import argparse
import socket
import sys
import time

import jax


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("multi-host (jax.distributed)")
    g.add_argument("--distributed", action="store_true",
                   help="call jax.distributed.initialize() first; on Cloud TPU pods, SLURM and Kubernetes "
                        "it detects the cluster itself, elsewhere give the three flags below")
    g.add_argument("--coordinator_address", default=None, help="host:port of process 0")
    g.add_argument("--num_processes", type=int, default=None)
    g.add_argument("--process_id", type=int, default=None)
    g.add_argument("--distributed_timeout", type=int, default=300,
                   help="seconds to wait for all processes to reach the coordinator before giving up")


def _reachable(address: str, timeout: float) -> bool:
    """True once a TCP connection to ``host:port`` succeeds, retrying until ``timeout`` seconds."""
    host, _, port = address.rpartition(":")
    deadline = time.time() + timeout
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=2):
                return True
        except OSError:
            if time.time() >= deadline:
                return False
            time.sleep(0.5)


def initialize(args: argparse.Namespace) -> str | None:
    """Joins the run when the flags ask for it; returns an error line (the caller prints it and exits
    3) when the coordinator never answers, else None."""
    if not (args.distributed or args.coordinator_address):
        return None
    where = args.coordinator_address or "the auto-detected coordinator"
    if args.coordinator_address and args.process_id not in (None, 0):
        # jax aborts the whole process (a C++ fatal error) when the coordinator never answers;
        # probing the port first turns the common mistake into a readable error.
        if not _reachable(args.coordinator_address, args.distributed_timeout):
            return (f"the coordinator {args.coordinator_address} did not answer within "
                    f"{args.distributed_timeout}s. Start process 0 (--process_id=0) on that host, check "
                    f"the address/port and firewall, or raise --distributed_timeout.")
    print(f"vitjax: joining the distributed run at {where} (waits up to {args.distributed_timeout}s "
          f"for all {args.num_processes or ''} processes)", file=sys.stderr)
    jax.distributed.initialize(coordinator_address=args.coordinator_address,
                               num_processes=args.num_processes, process_id=args.process_id,
                               initialization_timeout=args.distributed_timeout)
    return None
