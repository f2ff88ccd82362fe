"""The seed's chat, with a Mailbox doing the two-semaphore handoff.

Type lines; the child prints them; 'quit' ends both.
    printf 'hi\\nquit\\n' | python examples/mailbox_chat.py
"""
import multiprocessing as mp
import sys

import shmipc


def reader(box):
    while True:
        line = box.recv().decode()
        if line == "quit":
            break
        print(f"read buf : {line}.", flush=True)
    box.detach()


if __name__ == "__main__":
    with shmipc.Mailbox.create(4096) as box:
        child = mp.get_context("fork").Process(target=reader, args=(box,))
        child.start()
        try:
            for raw in sys.stdin:
                line = raw.rstrip("\n")
                box.send(line.encode()[:4096])
                if line == "quit":
                    break
            else:
                box.send(b"quit")
            child.join()
        finally:
            if child.is_alive():
                child.kill()
            box.remove()
