"""A pipeline of worker processes: jobs go out on one queue, results come back
on another (pyqmem.Queue as a faster multiprocessing.Queue).

    python examples/pipeline.py
"""

import multiprocessing as mp

import pyqmem


def square(jobs: pyqmem.Queue, results: pyqmem.Queue) -> None:
    for n in iter(jobs.get, None):  # None is the "no more work" sentinel
        results.put((n, n * n))


def main() -> None:
    # anonymous queues: shared by handing them to the workers, gone with the last holder
    with pyqmem.Queue() as jobs, pyqmem.Queue() as results:
        workers = [mp.Process(target=square, args=(jobs, results)) for _ in range(4)]
        for w in workers:
            w.start()
        jobs.put_many(range(1000))
        jobs.put_many([None] * len(workers))
        total = sum(square for _, square in (results.get(timeout=30) for _ in range(1000)))
        for w in workers:
            w.join()
        print("sum of squares below 1000:", total)
        assert total == sum(n * n for n in range(1000))


if __name__ == "__main__":
    main()
