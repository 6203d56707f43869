"""Request ids: unique per process without a system call each, and across forked workers."""

from __future__ import annotations

import os

from tollhouse.gateway.context import new_request_id


def test_ids_in_one_process_are_distinct():
    ids = {new_request_id() for _ in range(10_000)}
    assert len(ids) == 10_000


def test_a_forked_worker_does_not_repeat_its_parents_ids():
    # serve --workers forks after import: the child must draw a new random prefix.
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.close(write)
    child_id = os.read(read, 200).decode()
    os.close(read)
    os.waitpid(pid, 0)
    parent_id = new_request_id()
    assert child_id[:20] != parent_id[:20], (child_id, parent_id)
