"""One-off conversion of ``ilsvrc_2012_mean.mat`` (MATLAB v5, variable ``image_mean``) to the shipped .npy.

Run ``python -m weights_convert.mean_image MAT_FILE OUT.npy``; it needs scipy, which jaxviz itself does
not depend on (the package reads only the converted ``jaxviz/data/ilsvrc_2012_mean.npy``).
The variable is already rows x columns x channels with BGR channels (the old matcaffe layout that
R-CNN and DGN-AM subtract before permuting to Caffe's W x H), so it is stored unchanged as float32 HWC BGR.
"""

from __future__ import annotations

import sys

import numpy as np


def read_mean_mat(path: str) -> np.ndarray:
    """The ``image_mean`` variable of a MATLAB mean file as a contiguous float32 (H, W, 3) BGR array."""
    import scipy.io  # a conversion-time tool only

    image = scipy.io.loadmat(path)["image_mean"]
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"{path}: image_mean has shape {image.shape}, expected (H, W, 3)")
    return np.ascontiguousarray(image, dtype=np.float32)


def main(argv: list[str] | None = None) -> int:
    """Command line: MAT_FILE OUT_NPY."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m weights_convert.mean_image MAT_FILE OUT.npy", file=sys.stderr)
        return 2
    image = read_mean_mat(args[0])
    np.save(args[1], image)
    print(f"wrote {args[1]}: {image.shape} {image.dtype}, channel means (BGR) "
          f"{image.reshape(-1, 3).astype(np.float64).mean(0)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
