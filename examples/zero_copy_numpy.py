"""Zero-copy numpy across two processes: the child writes into the shared
pages, the parent sees it through its own array with no copy."""
import multiprocessing as mp

import numpy as np

import shmipc


def child(seg):
    frame = seg.ndarray(np.float64, (480, 640))  # aliases the shared pages
    frame[:] = 42.0
    del frame
    seg.detach()


if __name__ == "__main__":
    with shmipc.Segment.create(480 * 640 * 8) as seg:
        view = seg.ndarray(np.float64, (480, 640))
        p = mp.get_context("spawn").Process(target=child, args=(seg,))
        p.start()
        p.join()
        print("parent sees", view[0, 0], "- no copy made")
        del view
        seg.remove()
