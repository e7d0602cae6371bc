"""Hold a store's lock from a separate process: ``python lock_holder.py STORE`` prints "held" and
sleeps until killed (the lock tests SIGKILL it, or run it in another PID namespace)."""

import sys
import time

from dynamics.store.lock import StoreLock

if __name__ == "__main__":
    StoreLock(sys.argv[1]).acquire()
    print("held", flush=True)
    while True:
        time.sleep(1)
