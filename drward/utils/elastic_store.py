"""A fresh key space for every torchrun restart round, so that a restarted group never reads the previous round's keys.

Under torchrun the workers reach the rendezvous store at ``MASTER_ADDR:MASTER_PORT``. With the static rendezvous
(``--master_port P``) and with the c10d one sharing its store (``--standalone``, ``--rdzv-backend c10d``; torchrun's
default, ``TORCHELASTIC_USE_AGENT_STORE=True``), that store is served by the agent and **outlives the workers**: a
restarted group finds the keys of the round before it (gloo's peer addresses, the init barrier's counter) and connects
to a dead address or waits on a finished counter (PyTorch issue 135712). :func:`restart_round_store` gives each round
a key space of its own, a ``PrefixStore`` ``drward/<run id>/round<g>`` around a client of that store, where the round
number ``g`` is agreed by every rank of the round:

1. rank 0 takes ``g = add('drward/<run id>/rounds', 1)`` (one more than any earlier round's), then publishes it
   under ``open``;
2. every other rank reads ``open`` (maybe a stale ``g'`` of an earlier round), registers a fresh random token under
   ``round<g'>/member/<rank>``, and waits until rank 0 acknowledges that token (``round<g'>/ack/<token>``). If
   ``open`` changes meanwhile, the rank registers again in the newer round;
3. rank 0 waits until every rank has registered in round ``g`` and acknowledges each rank's token.

A token is acknowledged only by the rank 0 of its own round, so no rank is ever answered by a stale key. Rounds never
overlap: torchrun stops every worker of a round before it starts the next. ``TORCHELASTIC_RESTART_COUNT`` alone is
not a shared round number: with several nodes, an agent whose own workers were healthy restarts them when another
node re-joins *without* counting a restart (``torch/distributed/elastic/agent/server/api.py``, ``_invoke_run``), so
the nodes would disagree on it. It is logged beside ``g``.

Without the shared store (``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``) rank 0's worker hosts a new store on a new port
each round; the same protocol runs there, in an empty store (``g = 1``).
"""
from __future__ import annotations

import datetime
import os
import time
import uuid
from typing import Mapping, Tuple

import torch.distributed as dist

#: How often a waiting rank polls the store (seconds).
POLL_SECONDS = 0.05


def under_torchrun(environ: Mapping[str, str] = os.environ) -> bool:
    """True in a worker started by torchrun (it exports ``TORCHELASTIC_RESTART_COUNT``, 0 in the first round)."""
    return 'TORCHELASTIC_RESTART_COUNT' in environ


def store_client(environ: Mapping[str, str], rank: int, world_size: int, timeout: datetime.timedelta) -> dist.Store:
    """A client of the store at ``MASTER_ADDR:MASTER_PORT``: the agent's (``TORCHELASTIC_USE_AGENT_STORE=True``),
    else the one rank 0 hosts, as ``env://`` does."""
    agent_hosts = environ.get('TORCHELASTIC_USE_AGENT_STORE') == 'True'
    return dist.TCPStore(environ['MASTER_ADDR'], int(environ['MASTER_PORT']), world_size,
                         is_master=not agent_hosts and rank == 0, timeout=timeout, multi_tenant=True)


def _wait_for(store: dist.Store, key: str, deadline: float, what: str) -> None:
    while not store.check([key]):
        if time.monotonic() > deadline:
            raise TimeoutError(f'restart round: no {what} within the process-group timeout (key {key})')
        time.sleep(POLL_SECONDS)


def agree_on_round(store: dist.Store, rank: int, world_size: int, run_id: str,
                   timeout: datetime.timedelta) -> int:
    """The round number ``g`` every rank of this group gets (the protocol of the module docstring)."""
    base, deadline = f'drward/{run_id}', time.monotonic() + timeout.total_seconds()
    if rank == 0:
        g = int(store.add(f'{base}/rounds', 1))
        store.set(f'{base}/open', str(g))
        tokens = {}
        for other in range(1, world_size):
            key = f'{base}/round{g}/member/{other}'
            _wait_for(store, key, deadline, f'rank {other}')
            tokens[other] = store.get(key).decode()
        for token in tokens.values():
            store.set(f'{base}/round{g}/ack/{token}', '1')
        return g
    token = uuid.uuid4().hex
    while True:
        _wait_for(store, f'{base}/open', deadline, 'round opened by rank 0')
        g = int(store.get(f'{base}/open'))
        store.set(f'{base}/round{g}/member/{rank}', token)
        ack = f'{base}/round{g}/ack/{token}'
        while not store.check([ack]):
            if int(store.get(f'{base}/open')) != g:
                break  # g was an earlier round's: register in the new one
            if time.monotonic() > deadline:
                raise TimeoutError(f'restart round: rank 0 did not acknowledge rank {rank} in round {g} within the '
                                   'process-group timeout')
            time.sleep(POLL_SECONDS)
        else:
            return g


def restart_round_store(timeout: datetime.timedelta, environ: Mapping[str, str] = os.environ
                        ) -> Tuple[dist.Store, int, int, str]:
    """``(store, rank, world_size, description)`` for ``init_process_group(store=...)``: this round's own key
    space in torchrun's store."""
    rank, world_size = int(environ['RANK']), int(environ['WORLD_SIZE'])
    run_id = environ.get('TORCHELASTIC_RUN_ID') or 'none'
    client = store_client(environ, rank, world_size, timeout)
    g = agree_on_round(client, rank, world_size, run_id, timeout)
    prefix = f'drward/{run_id}/round{g}'
    text = (f'process group keys under {prefix} (torchrun restart count '
            f'{environ.get("TORCHELASTIC_RESTART_COUNT")}, store {environ["MASTER_ADDR"]}:{environ["MASTER_PORT"]})')
    return dist.PrefixStore(prefix, client), rank, world_size, text


__all__ = ['under_torchrun', 'store_client', 'agree_on_round', 'restart_round_store']
