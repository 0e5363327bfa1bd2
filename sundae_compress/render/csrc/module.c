/* The importable shell of the native rasteriser: an empty Python module. Importing it proves that
   the shared library was built for this interpreter; sundae_compress/render/native.py then loads
   the same file with ctypes and calls the plain C functions of raster.c. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static struct PyModuleDef raster_module = {
    PyModuleDef_HEAD_INIT, "_raster",
    "Native tile rasteriser of sundae_compress.render (loaded with ctypes by render.native).", -1, NULL,
};

PyMODINIT_FUNC PyInit__raster(void) { return PyModule_Create(&raster_module); }
