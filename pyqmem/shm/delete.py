"""Deleting a topic of the shared-memory backend.

A topic is deleted in two steps under its metadata lock: first a check that
no handle (in any process, this one included) has a partition log open,
then one ``rename`` of the topic folder to a hidden ``<root>/.deleted-*``
name (fsynced).  From the rename on the topic does not exist for anyone;
the hidden folder is then removed.  A delete interrupted (or killed) after
the rename leaves only such a hidden folder, never a half topic, and the
next delete in that root removes it.  Topic names cannot start with a dot,
so no topic is ever taken for one.

A handle is a Topic object or a consumer.  A message outliving its consumer
keeps its record mapped but is no handle (``qm_log_leave``).

What the check cannot see: a process that opens the topic between the check
and the rename keeps handles on the deleted files (its sends go nowhere
visible).  Delete a topic once its users are done with it.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from typing import TYPE_CHECKING, Optional, cast

from .._native import _core
from ..errors import InUse, NotFound
from .folders import (
    META,
    MetaLock,
    check_private,
    fsync_dir,
    log_args,
    partition_path,
    read_meta,
    root,
)

if TYPE_CHECKING:
    from ..backend import TopicConfig

__all__ = ["delete_topic", "TRASH_PREFIX"]

TRASH_PREFIX = ".deleted-"


def delete_topic(dir: Optional[str], name: str, force: bool) -> None:
    top = root(dir, make=False)
    folder = None if top is None else os.path.join(top, name)
    if folder is None or not os.path.isfile(os.path.join(folder, META)):
        raise NotFound(errno.ENOENT, f"no topic {name!r}", folder or dir)
    top = cast(str, top)  # not None, as folder is not (mypy cannot tell)
    check_private(folder, f"topic folder of {name!r}")
    trash = os.path.join(top, f"{TRASH_PREFIX}{name}-{uuid.uuid4().hex[:12]}")
    with MetaLock(folder):
        config = read_meta(folder)
        if config is None:  # deleted by another process while we waited for the lock
            raise NotFound(errno.ENOENT, f"no topic {name!r}", folder)
        if not force:
            _refuse_if_attached(folder, name, config)
        os.rename(folder, trash)
        fsync_dir(top)
    _sweep(top)


def _refuse_if_attached(folder: str, name: str, config: TopicConfig) -> None:
    for k in range(config.partitions):
        log = _core.Log.open(partition_path(folder, k), _core.OPEN_ONLY, *log_args(config))
        try:
            others = log.stats()["members"] - 1  # minus this check's own handle
        finally:
            log.close()
        if others > 0:
            raise InUse(
                f"topic {name!r} is open: {others} handle{'s' if others != 1 else ''} on "
                f"partition {k} (Topic objects and consumers, in any process, this one's "
                "included): close them first, or delete with force=True"
            )


def _sweep(top: str) -> None:
    """Remove the hidden folders of deletes (ours, or earlier interrupted ones)."""
    for entry in os.listdir(top):
        if entry.startswith(TRASH_PREFIX):
            shutil.rmtree(os.path.join(top, entry), ignore_errors=True)
