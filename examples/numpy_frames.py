"""numpy frames between processes: through a Queue (pickled with protocol 5,
the array's buffer copied once in and once out) and through a Topic (raw
bytes, read back zero-copy with numpy.frombuffer on the mapped record).

    python examples/numpy_frames.py
"""

import multiprocessing as mp
import os

import numpy as np

import pyqmem

SHAPE = (480, 640)


def camera(frames: pyqmem.Queue, n: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        frames.put(rng.integers(0, 255, SHAPE, dtype=np.uint8) + np.uint8(i))
    frames.put(None)


def main() -> None:
    with pyqmem.Queue(capacity=64 * 2**20) as frames:  # anonymous: nothing to clean up
        p = mp.Process(target=camera, args=(frames, 10))
        p.start()
        means = []
        while (frame := frames.get(timeout=30)) is not None:
            means.append(float(frame.mean()))
        p.join()
        print("queue: 10 frames, mean brightness", round(sum(means) / len(means), 1))

    with pyqmem.Topic(f"frames-{os.getpid()}", segment_bytes=16 * 2**20) as topic:
        topic.send(np.full(SHAPE, 7, dtype=np.uint8))  # any buffer: sent as its bytes
        with topic.consumer() as c:
            msg = c.get(timeout=5)
            frame = np.frombuffer(msg.data, dtype=np.uint8).reshape(SHAPE)  # no copy
            print("topic: frame", frame.shape, "all sevens:", bool((frame == 7).all()))
            del frame, msg  # the view pins the mapped segment until released
        topic.delete()


if __name__ == "__main__":
    main()
