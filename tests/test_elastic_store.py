"""The restart-round protocol of ``drward/utils/elastic_store.py`` on a real TCPStore (threads as ranks): every rank
of a round agrees on one fresh round number, also when a rank reads the previous round's keys first."""
import datetime
import threading
import time

import torch.distributed as dist

from drward.utils.elastic_store import agree_on_round, under_torchrun

TIMEOUT = datetime.timedelta(seconds=20)


def server():
    return dist.TCPStore('127.0.0.1', 0, is_master=True, wait_for_workers=False, timeout=TIMEOUT)


def client(port):
    return dist.TCPStore('127.0.0.1', port, is_master=False, timeout=TIMEOUT)


def one_round(port, world, delays):
    """Every rank of a round in its own thread and store client, rank ``r`` starting after ``delays[r]`` s."""
    found = [None] * world

    def rank(r):
        time.sleep(delays[r])
        found[r] = agree_on_round(client(port), r, world, 'job', TIMEOUT)

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return found


def test_each_round_gets_one_new_number_even_when_other_ranks_start_before_rank_0():
    store = server()
    assert one_round(store.port, 3, [0, 0, 0]) == [1, 1, 1]
    # ranks 1 and 2 start first and read round 1's "open": they must end in round 2 with rank 0
    assert one_round(store.port, 3, [0.5, 0, 0.1]) == [2, 2, 2]
    assert one_round(store.port, 2, [0.3, 0]) == [3, 3]


def test_a_round_whose_rank_0_died_before_acknowledging_leaves_nothing_the_next_round_uses():
    store = server()
    c = client(store.port)
    c.set('drward/job/open', '7')  # a round 7 that was opened, and rank 1 registered in it; rank 0 died
    c.set('drward/job/rounds', '7')
    c.set('drward/job/round7/member/1', 'old-token')
    assert one_round(store.port, 2, [0.4, 0]) == [8, 8]


def test_only_torchrun_workers_take_this_path():
    assert under_torchrun({'TORCHELASTIC_RESTART_COUNT': '0'})
    assert not under_torchrun({'RANK': '0', 'WORLD_SIZE': '2', 'SLURM_PROCID': '0'})
