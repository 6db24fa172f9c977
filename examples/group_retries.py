"""A consumer group with retries and a dead-letter topic: members share the
records; a handler that raises gets the record again after a backoff, and
after `max_deliveries` the record goes to "<topic>.dlq" with the reason.

    python examples/group_retries.py
"""

import os
import threading

import pyqmem


def handle(msg: pyqmem.Message) -> None:
    order = msg.value
    if order["qty"] <= 0:
        raise ValueError(f"order {order['id']}: quantity must be positive")
    print(f"order {order['id']}: {order['qty']} x {order['item']}")


def main() -> None:
    name = f"orders-{os.getpid()}"
    with pyqmem.Topic(name, partitions=2, serializer="pickle") as orders:
        for i, qty in enumerate([2, 1, 0, 5]):  # order 2 is bad
            orders.send({"id": i, "item": "widget", "qty": qty}, key=str(i))

        stop = threading.Event()
        fast_retries = pyqmem.RetryPolicy(initial=0.01, maximum=0.05)
        with orders.consumer(group="billing", max_deliveries=3, retry=fast_retries) as member:
            threading.Timer(1.5, stop.set).start()  # a service would run until told to stop
            member.run(handle, stop=stop)  # acks on return, nacks (retries) on an exception

        show_dead_letters(f"{name}.dlq")
        orders.delete()
    pyqmem.Topic.delete(f"{name}.dlq")


def show_dead_letters(name: str) -> None:
    with pyqmem.Topic(name, serializer="pickle") as dlq, dlq.consumer() as c:
        for dead in c.get_many(100, timeout=5):
            print("dead letter:", dead.value, "-", dead.headers["dlq.error"].decode())


if __name__ == "__main__":
    main()
