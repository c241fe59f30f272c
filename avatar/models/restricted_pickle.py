"""A restricted unpickler for licence-gated model files (FLAME, SMPL, SMPL-X ``.pkl``).

Plain ``pickle.load`` runs whatever callables a file names. These files only need numpy
arrays, scipy sparse matrices and, in the older releases, chumpy arrays (``chumpy.ch.Ch``,
whose pickled state keeps the value in ``x``). :func:`restricted_load` resolves exactly
those globals and rejects any other with :class:`RestrictedUnpicklingError` naming the
``module.name`` and the file. Chumpy is not needed: its classes map to
:class:`ChumpyStandIn`, and :func:`to_numpy` turns the loaded objects into plain arrays.
"""

from __future__ import annotations

import _compat_pickle
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse


class RestrictedUnpicklingError(pickle.UnpicklingError):
    """A pickle referenced a global outside the allowed set (or was malformed)."""


class ChumpyStandIn:
    """Keeps the pickled state of a chumpy object (its value is ``state['x']`` for a plain
    ``Ch``); chumpy itself is never imported."""

    chumpy_class = "chumpy.ch.Ch"

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {"state": state}

    def to_numpy(self) -> np.ndarray:
        x = self.state.get("x")
        if x is None:
            raise ValueError(
                f"a pickled {self.chumpy_class} has no stored value 'x' (a lazily computed chumpy "
                "expression): convert the file with chumpy installed, e.g. save its arrays as .npz"
            )
        return np.asarray(to_numpy(x))


_STAND_INS: dict[str, type] = {}


def _chumpy_stand_in(qualname: str) -> type:
    if qualname not in _STAND_INS:
        _STAND_INS[qualname] = type(qualname.rsplit(".", 1)[1], (ChumpyStandIn,), {"chumpy_class": qualname})
    return _STAND_INS[qualname]


def _safe_reconstructor(cls: type, base: type, state: Any) -> Any:
    """``copyreg._reconstructor`` limited to the classes this module allows."""
    if base is not object or not isinstance(cls, type):
        raise RestrictedUnpicklingError(f"refusing to reconstruct {cls!r} from base {base!r}")
    return object.__new__(cls)


def _np_core(*names: str) -> set[tuple[str, str]]:
    out = set()
    for core in ("numpy.core", "numpy._core"):
        for n in names:
            module, attr = n.rsplit(".", 1)
            out.add((f"{core}.{module}", attr))
    return out


_NUMPY_GLOBALS = {("numpy", "ndarray"), ("numpy", "dtype")} | _np_core(
    "multiarray._reconstruct", "multiarray.scalar", "numeric._frombuffer"
)
_SPARSE_CLASSES = {
    "csc_matrix", "csr_matrix", "coo_matrix", "lil_matrix", "dok_matrix",
    "csc_array", "csr_array", "coo_array",
}
_BUILTINS = {("builtins", "object"), ("builtins", "set"), ("builtins", "frozenset"), ("_codecs", "encode")}


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` only resolves array-like globals."""

    def __init__(self, file, source: str = "<bytes>", **kwargs) -> None:
        super().__init__(file, **kwargs)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (``__builtin__``, ``copy_reg``) as the default find_class maps them.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        if module.startswith("numpy.dtypes") and name.endswith("DType"):
            return super().find_class(module, name)
        if module.startswith("scipy.sparse") and name in _SPARSE_CLASSES:
            return getattr(scipy.sparse, name)
        if (module, name) in _BUILTINS:
            return super().find_class(module, name)
        if module in ("copyreg", "copy_reg") and name == "_reconstructor":
            return _safe_reconstructor
        if module == "chumpy" or module.startswith("chumpy."):
            return _chumpy_stand_in(f"{module}.{name}")
        raise RestrictedUnpicklingError(
            f"{self.source}: refusing to load global '{module}.{name}'. Only numpy arrays, scipy "
            "sparse matrices and chumpy arrays are allowed in model files; is this the right file?"
        )


def restricted_load(path: str | Path) -> Any:
    """Unpickle a model file allowing only numpy / scipy.sparse / chumpy-array globals.

    Python 2 pickles (the FLAME and SMPL releases) are read with ``encoding='latin1'``.

    Raises:
        RestrictedUnpicklingError: the file names any other global, or is not a pickle.
    """
    path = Path(path)
    with open(path, "rb") as f:
        try:
            return RestrictedUnpickler(f, source=str(path), encoding="latin1").load()
        except RestrictedUnpicklingError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
            raise RestrictedUnpicklingError(f"{path}: not a readable model pickle ({e})") from e


def to_numpy(obj: Any) -> Any:
    """Chumpy stand-ins -> ndarrays, recursively through dicts, lists and tuples; sparse
    matrices and everything else unchanged."""
    if isinstance(obj, ChumpyStandIn):
        return obj.to_numpy()
    if isinstance(obj, dict):
        return {k: to_numpy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_numpy(v) for v in obj)
    return obj


def dense(array: Any, dtype=np.float64) -> np.ndarray:
    """A dense ndarray of ``dtype`` from an ndarray, sparse matrix or chumpy stand-in."""
    array = to_numpy(array)
    if scipy.sparse.issparse(array):
        array = array.toarray()
    return np.asarray(array, dtype=dtype)


def _read_npy(f, source: str) -> Any:
    """One ``.npy`` stream; object arrays are unpickled with the restricted unpickler."""
    version = np.lib.format.read_magic(f)
    fmt = np.lib.format
    reader = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
    shape, fortran, dtype = reader(f) if reader else fmt._read_array_header(f, version)
    if dtype.hasobject:
        array = RestrictedUnpickler(f, source=source, encoding="latin1").load()
        return array[()] if isinstance(array, np.ndarray) and array.shape == () else array
    data = f.read()
    order = "F" if fortran else "C"
    return np.frombuffer(data, dtype=dtype, count=int(np.prod(shape))).reshape(shape, order=order).copy()


def load_arrays(path: str | Path) -> dict[str, Any]:
    """The arrays of a model file as a dict, never running pickled code.

    ``.pkl`` goes through :func:`restricted_load` (chumpy arrays become ndarrays);
    ``.npz`` and ``.npy`` are read with numpy, object entries (pickled dicts, e.g. FLAME's
    ``landmark_embedding.npy``) through the restricted unpickler. A ``.npy`` holding a
    dict returns that dict; one holding an array returns ``{"array": array}``.
    """
    import zipfile

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".pkl":
        data = restricted_load(path)
    elif suffix == ".npy":
        with open(path, "rb") as f:
            data = _read_npy(f, str(path))
    elif suffix == ".npz":
        data = {}
        with zipfile.ZipFile(path) as zf:
            for member in zf.namelist():
                with zf.open(member) as f:
                    data[member[:-4] if member.endswith(".npy") else member] = _read_npy(f, f"{path}:{member}")
    else:
        raise ValueError(f"{path}: unsupported model file type '{suffix}' (expected .pkl, .npz or .npy)")
    data = to_numpy(data)
    if not isinstance(data, dict):
        data = {"array": data}
    return data
