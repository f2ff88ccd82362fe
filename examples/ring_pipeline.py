"""A producer process streams numpy frames through a Ring; the consumer
reads them in place (zero copy) and closes on end of stream."""
import multiprocessing as mp

import numpy as np

import shmipc


def producer(ring, frames):
    for i in range(frames):
        ring.put_array(np.full((256, 256), i, dtype=np.uint16))
    ring.close()
    ring.detach()


if __name__ == "__main__":
    with shmipc.Ring.create(8 << 20) as ring:
        p = mp.get_context("spawn").Process(target=producer, args=(ring, 100))
        p.start()
        total = 0
        try:
            while True:
                with ring.get_view() as view:
                    frame = shmipc.decode_array(view)  # no copy
                    total += int(frame[0, 0])
                    del frame
        except shmipc.EndOfStream:
            pass
        p.join()
        print("sum of frame ids:", total)
        ring.remove()
