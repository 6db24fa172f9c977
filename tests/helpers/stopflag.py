"""A stop signal that survives SIGKILLed readers."""


class StopFlag:
    """A stop signal for member processes that are SIGKILLed at random: a
    multiprocessing.Event takes a lock in is_set(), so a member killed inside
    it left that lock held and the parent's set() waited forever (seen in this
    suite).  A byte in shared memory, no lock."""

    def __init__(self, ctx):
        self._flag = ctx.RawValue("b", 0)

    def set(self):
        self._flag.value = 1

    def is_set(self):
        return self._flag.value != 0
