"""Where pyqmem keeps things (documented implementation facts)."""
import os


def shm_dir() -> str:
    """The folder of queue files: $PYQMEM_DIR, else $PYQMEM_SHM_DIR (deprecated), else /dev/shm."""
    return os.environ.get("PYQMEM_DIR") or os.environ.get("PYQMEM_SHM_DIR") or "/dev/shm"


def queue_path(name: str) -> str:
    """The file of the queue `name`: <shm_dir()>/pyqmem.<uid>.q.<name>."""
    return os.path.join(shm_dir(), f"pyqmem.{os.getuid()}.q.{name}")
