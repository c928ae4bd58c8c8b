"""A protocol module that takes a while to import: workers that import it
at the same moment race for it (the threads host's start race)."""

import time

time.sleep(0.05)


class Hello:
    def data_received(self, transport, data):
        return b"hello\n"
