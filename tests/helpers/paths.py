"""Where pyqmem keeps things (documented implementation facts)."""
import os


def shm_dir() -> str:
    return os.environ.get("PYQMEM_SHM_DIR") or "/dev/shm"


def queue_path(name: str) -> str:
    """The file of the queue `name`: ${PYQMEM_SHM_DIR:-/dev/shm}/pyqmem.<uid>.q.<name>."""
    return os.path.join(shm_dir(), f"pyqmem.{os.getuid()}.q.{name}")
