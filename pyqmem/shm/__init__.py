"""The shared-memory backend (the default): ring queues and topics as
memory-mapped files on this host.  ``SharedMemory(dir)`` selects a root
folder for topics; the modules here are the storage engine behind
``pyqmem.Topic`` (folders.py: files and metadata; store.py: one open topic;
subscriber.py and group_member.py: its readers)."""

from .backend import SharedMemory

__all__ = ["SharedMemory"]
