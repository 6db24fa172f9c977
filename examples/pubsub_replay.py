"""Publish-subscribe with replay: every subscriber reads every record, from
where it chooses (the earliest record, the end, an offset or a time).

    python examples/pubsub_replay.py
"""

import os
import time

import pyqmem


def main() -> None:
    with pyqmem.Topic(f"prices-{os.getpid()}", partitions=2) as prices:
        live = prices.consumer(start="latest")  # sees only what is sent from now on
        for i in range(5):
            prices.send(f"tick {i}".encode(), key="EURUSD")
        halfway = time.time()
        for i in range(5, 10):
            prices.send(f"tick {i}".encode(), key="EURUSD")

        # one key, one partition: its records keep their order
        print("live:", [bytes(m.data).decode() for m in live.get_many(100, timeout=1)])
        with prices.consumer(start="earliest") as replay:
            print("replay:", [bytes(m.data).decode() for m in replay.get_many(100, timeout=1)])
        with prices.consumer(start={"timestamp": halfway}) as since:
            print(
                "since halfway:", [bytes(m.data).decode() for m in since.get_many(100, timeout=1)]
            )
        live.close()
        prices.delete()


if __name__ == "__main__":
    main()
