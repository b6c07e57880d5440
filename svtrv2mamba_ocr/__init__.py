"""OpenOCR plug-in for this project's encoder.

Inside an OpenOCR checkout the name ``openrec`` is OpenOCR's own package, which shadows ours. This
package therefore loads our ``openrec`` source under a private name (``svtrv2mamba_ocr._openrec``);
all of our modules import each other relatively, so nothing resolves to OpenOCR's ``openrec``.
"""
import importlib.util
import os
import sys

__all__ = ["impl"]

_PRIVATE = __name__ + "._openrec"


def _load_private_openrec():
    if _PRIVATE in sys.modules:
        return sys.modules[_PRIVATE]
    here = os.path.dirname(os.path.abspath(__file__))
    pkg_dir = os.path.join(os.path.dirname(here), "openrec")
    spec = importlib.util.spec_from_file_location(_PRIVATE, os.path.join(pkg_dir, "__init__.py"),
                                                  submodule_search_locations=[pkg_dir])
    module = importlib.util.module_from_spec(spec)
    sys.modules[_PRIVATE] = module
    spec.loader.exec_module(module)
    return module


impl = _load_private_openrec()
