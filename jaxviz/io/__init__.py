"""Files and pictures: atomic writes, PNGs and contact sheets, the static HTML gallery."""

from jaxviz.io.atomic import atomic_write_bytes, npy_bytes, npz_bytes
from jaxviz.io.gallery import Section, render_gallery, write_contact_sheets, write_gallery
from jaxviz.io.images import contact_sheet, png_bytes, save_png, to_pil

__all__ = ["atomic_write_bytes", "npy_bytes", "npz_bytes", "Section", "render_gallery", "write_contact_sheets",
           "write_gallery", "contact_sheet", "png_bytes", "save_png", "to_pil"]
