/* The importable shell of the native kernel: an empty Python module. Importing it proves that the
   shared library was built for this interpreter; sundae_compress/prune/native.py then loads the
   same file with ctypes and calls the plain C functions of knn.c and merge.c. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static struct PyModuleDef kernel_module = {
    PyModuleDef_HEAD_INIT, "_kernel",
    "Native kNN / merge kernels of sundae_compress.prune (loaded with ctypes by prune.native).", -1, NULL,
};

PyMODINIT_FUNC PyInit__kernel(void) { return PyModule_Create(&kernel_module); }
